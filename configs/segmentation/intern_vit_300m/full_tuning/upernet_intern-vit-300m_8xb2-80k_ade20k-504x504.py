# Full tuning with InternViT-300M-448px: head tuning with a trainable backbone, drop path 0.4,
# layer-wise lr decay 0.95 over 24 layers. 300M parameters fit plain DDP (no FSDP).
_base_ = ['../head_tuning/upernet_intern-vit-300m_8xb2-80k_ade20k-504x504.py']
model = dict(
    backbone=dict(frozen=False, frozen_dtype=None, drop_path_rate=0.4),
    # as the 6B full-tuning recipe: the auxiliary head on pyramid level 2 (head tuning: 1)
    auxiliary_head=dict(in_index=2))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.95))
