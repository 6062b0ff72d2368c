# Mask R-CNN 1x, COCO, 1024 crops: InternViT-6B with a ViT-Adapter; the ViT is frozen
# (bf16 weights), the adapter, FPN and heads are trained.
# Weights: InternViT-6B-224px (48 blocks), patch-14 stem resampled to 16 on load.
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit-adapter.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/intern_vit_6b_224px.pth'
model = dict(
    backbone=dict(
        arch='6b',
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        frozen=True,
        frozen_dtype='bfloat16',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))
