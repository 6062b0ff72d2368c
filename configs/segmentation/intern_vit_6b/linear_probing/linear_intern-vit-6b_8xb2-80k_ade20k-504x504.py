# Linear probing (InternVL reference: 47.2 mIoU): frozen InternViT-6B held in bf16, features of
# block 44 only, batch norm + 1x1 classifier, weight decay 0, drop path 0.
_base_ = [
    '../../../_base_/models/linear_intern_vit_6b.py',
    '../../../_base_/datasets/ade20k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
model = dict(
    backbone=dict(frozen=True, frozen_dtype='bfloat16', out_indices=[44], drop_path_rate=0.0))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0),
    # The reference's layer-decay constructor at rate 1.0 (its groups; weight decay 0 anyway).
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=1.0, no_decay_suffixes=['.bias']))
