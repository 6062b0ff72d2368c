# COCO-Stuff-164K (171 classes; labels converted by mmseg's
# tools/dataset_converters/coco_stuff164k.py, 255 = ignore, no zero-label reduction), with the
# same 504 recipe as ADE20K.
dataset_type = 'COCOStuffDataset'
data_root = 'data/coco_stuff164k'
crop_size = (504, 504)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    # Label map size and label range checked per sample, naming the file ('skip' to drop it).
    dict(type='ValidateSegSample', num_classes=171, on_error='raise'),
    dict(type='RandomResize', scale=(2016, 504), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    # The reference's SETR_Resize: the short side becomes exactly 504 with the long side
    # uncapped (mmcv's Resize with a long-side bound no image reaches), then each side up to a
    # multiple of the patch size 14 (ResizeToMultiple rounds up), before slide inference.
    dict(type='Resize', scale=(1000000, 504), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=14),
    dict(type='LoadAnnotations'),
    # Label range (and size, against the original image) checked per sample, naming the
    # file: IoUMetric would drop labels >= num_classes silently.
    dict(type='ValidateSegSample', num_classes=171, on_error='raise'),
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
            [dict(type='LoadAnnotations')],
            [dict(type='ValidateSegSample', num_classes=171, on_error='raise')],
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
        data_prefix=dict(img_path='images/train2017', seg_map_path='annotations/train2017'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=4,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='images/val2017', seg_map_path='annotations/val2017'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
