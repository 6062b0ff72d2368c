# A tiny InternViT (4 blocks, 64 wide, patch 16) with a ViT-Adapter and UperNet, trained from
# scratch for 100 iterations on the CPU on the synthetic ADE20K-format dataset:
#
#   python tools/dataset_converters/make_synthetic_ade.py data/synthetic_ade
#   python tools/train.py configs/demo/upernet_intern-vit-tiny-adapter_1xb4-100_synthetic-112x112.py
#
# Same structure as the 6B adapter recipe (interactions, cffn/deform ratios 0.25, UperNet) at a
# size that fits two CPU cores; the ViT is trained here since it starts from random weights.
custom_imports = dict(imports=['backbones', 'segmentation'], allow_failed_imports=False)
default_scope = 'mmseg'

crop_size = (112, 112)
data_root = 'data/synthetic_ade'
num_classes = 5  # make_synthetic_ade.py --num-classes (default 5)
metainfo = dict(
    classes=('background', 'stripes disc', 'checker disc', 'stripes box', 'dots box'),
    palette=[[128, 128, 128], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]])

# ---------------------------------------------------------------- model
norm_cfg = dict(type='BN', requires_grad=True)  # one CPU process: plain BN
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=crop_size)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    backbone=dict(
        type='InternViTAdapter',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0,
                  norm_type='rms_norm', qk_norm=True, qkv_bias=False, layer_scale_init=0.1),
        img_size=112,
        patch_size=16,
        pretrain_size=112,
        drop_path_rate=0.0,
        frozen=False,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        conv_inplane=16,
        n_points=4,
        deform_num_heads=4,
        deform_ratio=0.25,
        cffn_ratio=0.25,
        add_vit_feature=True,
        use_extra_extractor=True,
        norm_cfg=norm_cfg),
    decode_head=dict(
        type='UPerHead',
        in_channels=[64, 64, 64, 64],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))

# ---------------------------------------------------------------- data
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(448, 112), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(448, 112), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
dataset = dict(
    type='BaseSegDataset',
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

# ---------------------------------------------------------------- schedule
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys=dict(level_embed=dict(decay_mult=0.0))))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type='PolyLR', power=1.0, eta_min=0.0, by_epoch=False, begin=10, end=100)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=100, val_interval=100)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# ---------------------------------------------------------------- runtime
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='nccl'))
vis_backends = [dict(type='LocalVisBackend')]
visualizer = dict(type='SegLocalVisualizer', vis_backends=vis_backends, name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
