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
    auxiliary_head=dict(num_classes=171))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
