# Mask R-CNN 1x, COCO, 1024 crops: InternViT-300M with a ViT-Adapter; the ViT is frozen
# (bf16 weights), the adapter, FPN and heads are trained.
# Weights: InternViT-300M-448px (HF directory), patch-14 stem resampled to 16 on load.
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit-adapter.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/InternViT-300M-448px'
model = dict(
    backbone=dict(
        arch='300m',
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        frozen=True,
        frozen_dtype='bfloat16',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[1024, 1024, 1024, 1024]))
