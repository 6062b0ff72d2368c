# 1x schedule (mmdet's stock `schedule_1x`, as both InternViT-6B reference recipes use it):
# 12 epochs, lr x0.1 after epochs 8 and 11, linear warmup over 500 iterations from 0.001 of the
# lr. AdamW lr 1e-4, betas (0.9, 0.999), weight decay 0.05, in bf16 autocast; the top configs
# add the parameter groups (layer-decay constructor) and clipping of their recipe.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11], gamma=0.1)
]

optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05))

# The lr above is for 16 images per iteration (8 GPUs x 2). `tools/train.py --cfg-options
# auto_scale_lr.enable=True` rescales it linearly for another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
