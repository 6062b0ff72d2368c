# Mask R-CNN 1x, COCO, 1024 crops: frozen InternViT-6B (bf16 weights), simple
# feature pyramid + FPN + Mask R-CNN heads trained. Weights: InternViT-6B-224px (48 blocks).
# The frozen backbone keeps global attention in every block, as it was pretrained.
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit_simple-pyramid.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/intern_vit_6b_224px.pth'
model = dict(
    backbone=dict(
        arch='6b',
        out_indices=[11, 23, 35, 47],
        frozen=True,
        frozen_dtype='bfloat16',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
