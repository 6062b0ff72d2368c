# Linear probing on COCO-Stuff-164K (171 classes) with InternViT-6B-448px-V1-2 (45 blocks): the
# 224px COCO-Stuff recipe with the 448px backbone, as InternVL-MMDetSeg's
# intern_vit_6b_448px_v1_2/linear_probing/linear_intern_vit_6b_448px_v1_2_504_80k_cocostuff164k_bs16_lr4e-5_frozen.py
# (no published number).
_base_ = ['../../intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_coco-stuff164k-504x504.py']
model = dict(
    backbone=dict(
        arch='6b-448px',
        pretrain_size=448,
        out_indices=[44],
        init_cfg=dict(checkpoint='pretrained/intern_vit_6b_448px_v1_2')))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=45))
