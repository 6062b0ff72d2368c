# Head tuning (InternVL reference: 54.9 mIoU): frozen InternViT-6B held in bf16, blocks
# [11, 23, 35, 47] through the simple feature pyramid into UperNet (1536 channels) + auxiliary
# FCN head; weight decay 0.05, drop path 0, no layer decay.
_base_ = [
    '../../../_base_/models/upernet_intern_vit_6b.py',
    '../../../_base_/datasets/ade20k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
model = dict(backbone=dict(frozen=True, frozen_dtype='bfloat16', drop_path_rate=0.0))
optim_wrapper = dict(optimizer=dict(weight_decay=0.05))
