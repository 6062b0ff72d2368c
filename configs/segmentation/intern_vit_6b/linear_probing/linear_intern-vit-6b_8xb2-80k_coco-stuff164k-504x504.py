# Linear probing on COCO-Stuff-164K (171 classes); otherwise the ADE20K recipe.
_base_ = [
    '../../../_base_/models/linear_intern_vit_6b.py',
    '../../../_base_/datasets/coco-stuff164k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
model = dict(
    backbone=dict(frozen=True, frozen_dtype='bfloat16', out_indices=[44], drop_path_rate=0.0),
    decode_head=dict(num_classes=171))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.0),
    # The reference's layer-decay constructor at rate 1.0 (its groups; weight decay 0 anyway).
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=1.0, no_decay_suffixes=['.bias']))
