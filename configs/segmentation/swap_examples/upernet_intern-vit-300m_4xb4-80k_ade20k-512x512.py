# Swapping InternViT into a config that ships with mmseg: mmseg's own UPerNet R-50 ADE20K recipe
# (4 GPUs x 4 images, 80k iterations, 512x512 crops, SGD) with the ResNet-50 replaced by
# InternViT-300M and the simple feature pyramid. Data pipeline, schedule, UPerHead and auxiliary
# FCN head all come from mmseg's file; only the backbone, the neck and the head input widths
# change. `mmseg::` resolves the base inside the installed mmseg package.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py']
custom_imports = dict(imports=['backbones', 'segmentation'], allow_failed_imports=False)

model = dict(
    pretrained=None,  # the R-50 base names an ImageNet ResNet here; InternViT loads its own
    backbone=dict(
        _delete_=True,
        type='InternViT',
        arch='300m',
        img_size=512,
        patch_size=14,  # 512 px inputs are padded to 518: a 37x37 token grid
        pretrain_size=448,
        out_indices=[5, 11, 17, 23],
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_300m_448px')),
    neck=dict(
        type='SimpleFeaturePyramid',
        in_channels=1024,
        rescales=(4, 2, 1, 0.5),
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024]),
    auxiliary_head=dict(in_channels=1024))
