# Head tuning on COCO-Stuff-164K (171 classes); otherwise the ADE20K recipe.
_base_ = [
    '../../../_base_/models/upernet_intern_vit_6b.py',
    '../../../_base_/datasets/coco-stuff164k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
model = dict(
    backbone=dict(frozen=True, frozen_dtype='bfloat16', drop_path_rate=0.0),
    decode_head=dict(num_classes=171),
    # The reference's head-tuning configs feed the auxiliary head from pyramid level 1.
    auxiliary_head=dict(in_index=1, num_classes=171))
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    # The reference's layer-decay constructor (rate 1.0: no decay of the lr). Reference quirk copied: only
    # 1-D parameters and names ending in '.bias' skip weight decay; pos_embed and cls_token decay
    # (its exemption by name compares bare names with 'backbone.'-prefixed ones, never matching).
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=1.0, no_decay_suffixes=['.bias']))
