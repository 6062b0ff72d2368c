# Mask R-CNN 1x, COCO, 1024 crops: InternViT-300M with a ViT-Adapter, all trained.
# Weights: InternViT-300M-448px (HF directory) (patch-14 stem resampled to 16 on load).
# Full tuning: AdamW with layer-wise lr decay 0.9 over the 24 blocks, drop path 0.4, bf16
# autocast, activation checkpointing. No published reference for 300M: these follow
# ViT-L detection recipes (ViTDet / ViT-Adapter) and are untuned.
# The adapter keeps global attention in every block (window_size / global_indices would
# work as for the plain ViT).
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
        drop_path_rate=0.4,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[1024, 1024, 1024, 1024]))
optim_wrapper = dict(
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.9))
