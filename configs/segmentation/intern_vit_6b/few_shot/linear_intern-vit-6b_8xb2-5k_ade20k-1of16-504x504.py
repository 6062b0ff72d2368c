# Few-shot: 1/16 of ADE20K train, 5k iterations (warmup 1500, poly to 0 at 5k).
_base_ = ['./linear_intern-vit-6b_8xb2-80k_ade20k-1of1-504x504.py']
train_dataloader = dict(dataset=dict(subset_ratio=1 / 16))
train_cfg = dict(max_iters=5000, val_interval=5000)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=5000),
]
