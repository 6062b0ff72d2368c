# ADE20K (ADEChallengeData2016) with the InternVL recipe: 504 crops, short side 504 at test time.
dataset_type = 'ADE20KDataset'
data_root = 'data/ade/ADEChallengeData2016'
crop_size = (504, 504)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # Label map size and label range checked per sample, naming the file ('skip' to drop it).
    dict(type='ValidateSegSample', num_classes=150, on_error='raise'),
    dict(type='RandomResize', scale=(2016, 504), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    # Normalisation and padding to 504 (image 0, labels 255) happen in the model's
    # SegDataPreProcessor (`size=crop_size`).
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # The reference's SETR_Resize: the short side becomes exactly 504 with the long side
    # uncapped (mmcv's Resize with a long-side bound no image reaches), then each side up to a
    # multiple of the patch size 14 (ResizeToMultiple rounds up), before slide inference.
    dict(type='Resize', scale=(1000000, 504), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=14),
    # Annotations are loaded after resizing: metrics compare at the original resolution.
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # Label range (and size, against the original image) checked per sample, naming the
    # file: IoUMetric would drop labels >= num_classes silently.
    dict(type='ValidateSegSample', num_classes=150, on_error='raise'),
    dict(type='PackSegInputs')
]
# Multi-scale + flip test-time augmentation (`tools/test.py CONFIG CKPT --tta`), as mmseg's
# dataset bases ship it. The published InternVL numbers are single-scale (test_pipeline), not this.
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(1000000, int(504 * r)), keep_ratio=True)
             for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='ResizeToMultiple', size_divisor=14)],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='ValidateSegSample', num_classes=150, on_error='raise')],
            [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(
    batch_size=2,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
