# Mask R-CNN 1x, COCO, 1024 crops: InternViT-6B with a ViT-Adapter, all trained.
# Weights: InternViT-6B-224px (48 blocks) (patch-14 stem resampled to 16 on load).
# Full tuning (the reference recipe): AdamW with layer-wise lr decay 0.95 over the 48
# blocks, drop path 0.4, bf16 autocast, activation checkpointing.
# The adapter keeps global attention in every block (window_size / global_indices would
# work as for the plain ViT).
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit-adapter.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
    # A trainable 6B backbone needs sharding: FSDP2 through MMEngine's FlexibleRunner (bf16
    # blocks, float32 master weights). `tools/train.py --strategy NAME` swaps the engine.
    '../../../_base_/strategies/fsdp2_full_shard.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/intern_vit_6b_224px.pth'
model = dict(
    backbone=dict(
        arch='6b',
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        drop_path_rate=0.4,
        with_cp=True,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95))
# Checkpoints are sharded folders; the final model is also written as one file for tools/test.py.
custom_hooks = [dict(type='ExportConsolidatedHook', filename='consolidated.pth')]
