# Few-shot: 1/8 of ADE20K train, 10k iterations, warmup 200 (InternVL reference).
_base_ = ['./linear_intern-vit-6b_8xb2-40k_ade20k-1of2-504x504.py']
train_dataloader = dict(dataset=dict(subset_ratio=1 / 8))
train_cfg = dict(max_iters=10000, val_interval=1000)
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=10001),
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=201),
]
