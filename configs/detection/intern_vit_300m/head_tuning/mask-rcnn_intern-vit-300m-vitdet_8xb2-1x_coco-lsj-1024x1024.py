# Our ViTDet-style variant (no published recipe or number). Mask R-CNN 1x (500 warmup
# iterations, mmdet's 1x), COCO, 1024 LSJ crops: frozen InternViT-300M (bf16 weights), simple
# feature pyramid + FPN + Mask R-CNN heads trained. Weights: InternViT-300M-448px (HF directory).
# The frozen backbone keeps global attention in every block, as it was pretrained.
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit_vitdet.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/InternViT-300M-448px'
head_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(
        arch='300m',
        out_indices=[5, 11, 17, 23],
        frozen=True,
        frozen_dtype='bfloat16',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=1024, out_channels=256,
             rescales=(4, 2, 1, 0.5), norm_cfg=dict(type='LN')),
        dict(type='FPN', in_channels=[256, 256, 256, 256], out_channels=256, num_outs=5,
             norm_cfg=head_norm_cfg),
    ])
