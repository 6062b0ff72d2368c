# Mask R-CNN 1x, COCO, 1024 crops: InternViT-6B fully tuned through a simple feature
# pyramid + FPN. Weights: InternViT-6B-224px (48 blocks).
# Full tuning (the reference recipe): AdamW with layer-wise lr decay 0.95 over the 48
# blocks, drop path 0.4, bf16 autocast, activation checkpointing.
# Window attention (14x14 tokens) in every block except the last block of each quarter
# ([11, 23, 35, 47]), which keeps global attention (ViTDet style).
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit_simple-pyramid.py',
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
        out_indices=[11, 23, 35, 47],
        drop_path_rate=0.4,
        with_cp=True,
        window_size=14,
        global_indices=[11, 23, 35, 47],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95))
# Checkpoints are sharded folders; the final model is also written as one file for tools/test.py.
custom_hooks = [dict(type='ExportConsolidatedHook', filename='consolidated.pth')]
