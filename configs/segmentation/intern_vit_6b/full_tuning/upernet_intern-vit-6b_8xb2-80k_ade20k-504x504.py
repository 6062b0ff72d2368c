# Full tuning (InternVL reference: 58.9 mIoU): head tuning with a trainable backbone, drop path
# 0.4 and layer-wise lr decay 0.95 over the 48 blocks.
_base_ = [
    '../../../_base_/models/upernet_intern_vit_6b.py',
    '../../../_base_/datasets/ade20k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
    # A trainable 6B backbone needs sharding: FSDP2 through MMEngine's FlexibleRunner (bf16
    # blocks, float32 master weights: the numerics of the reference's DeepSpeed ZeRO-1 bf16).
    # `tools/train.py --strategy deepspeed_zero1|fsdp1_full_shard|...` swaps the engine.
    '../../../_base_/strategies/fsdp2_full_shard.py',
]
model = dict(backbone=dict(frozen=False, drop_path_rate=0.4))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    # The reference's layer-decay constructor. Reference quirk copied: only
    # 1-D parameters and names ending in '.bias' skip weight decay; pos_embed and cls_token decay
    # (its exemption by name compares bare names with 'backbone.'-prefixed ones, never matching).
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95, no_decay_suffixes=['.bias']))
# Checkpoints are sharded folders; the final model is also written as one file for tools/test.py.
custom_hooks = [dict(type='ExportConsolidatedHook', filename='consolidated.pth')]
