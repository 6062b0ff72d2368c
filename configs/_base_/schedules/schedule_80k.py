# InternVL segmentation schedule (mmcv 1.x `lr_config=dict(policy='poly', power=1.0,
# min_lr=0.0, warmup='linear', warmup_iters=1500, warmup_ratio=1e-6, by_epoch=False)`): AdamW
# 4e-5; an evaluation and a checkpoint every 1000 iterations, the best mIoU kept; bf16 autocast.
optim_wrapper = dict(
    type='AmpOptimWrapper',
    dtype='bfloat16',
    optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=None)
# mmcv 1.x's poly runs over all iterations from 0 and its warmup multiplies it:
#   lr(i) = 4e-5 (1 - i / 80000) (1 - (1 - i / 1500) (1 - 1e-6))  for i < 1500,
#   lr(i) = 4e-5 (1 - i / 80000)                                  after.
# MMEngine chains schedulers that overlap (each multiplies the lr by its own ratio), so a PolyLR
# over the whole run and a LinearLR over the warmup give exactly that product. An MMEngine
# scheduler reaches its final value at iteration `end - 1`, so `end` is the mmcv length + 1.
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=80001),
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1501),
]
# The reference evaluates every 1000 iterations and keeps the best (`save_best`); its published
# numbers are the best of those evaluations.
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    # A 6B checkpoint with optimizer state is ~70 GB: keep the newest two.
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000, max_keep_ckpts=2,
                    save_best='mIoU', rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# 8 GPUs x 2 images; enable to rescale the lr linearly for another total batch size.
auto_scale_lr = dict(enable=False, base_batch_size=16)
