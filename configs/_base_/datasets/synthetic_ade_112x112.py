# The synthetic ADE20K-format dataset of tools/dataset_converters/make_synthetic_ade.py with its
# default 4 classes (background, stripes, checker, dots; 128x128 images, 112x112 crops), for the
# CPU demos and tests:
#
#   python tools/dataset_converters/make_synthetic_ade.py data/synthetic_ade
#
# It is read as a BaseSegDataset with its own class names (ADE20KDataset only accepts subsets of
# the 150 ADE20K names); labels are ADE20K-style (0 = unlabeled, reduce_zero_label=True).
crop_size = (112, 112)
dataset_type = 'BaseSegDataset'
data_root = 'data/synthetic_ade'
metainfo = dict(
    classes=('background', 'stripes', 'checker', 'dots'),
    palette=[[128, 128, 128], [230, 25, 75], [60, 180, 75], [255, 225, 25]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # Label map size and label range checked per sample, naming the file ('skip' to drop it).
    dict(type='ValidateSegSample', num_classes=4, on_error='raise'),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    # No PhotoMetricDistortion: colors are random per object already, and the color jitter
    # halves what the tiny demo model learns in a few hundred iterations.
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='ResizeToMultiple', size_divisor=14),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    # Label range (and size, against the original image) checked per sample, naming the
    # file: IoUMetric would drop labels >= num_classes silently.
    dict(type='ValidateSegSample', num_classes=4, on_error='raise'),
    dict(type='PackSegInputs')
]
# Multi-scale + flip test-time augmentation (`tools/test.py CONFIG CKPT --tta`), as mmseg's
# dataset bases ship it.
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(512, int(128 * r)), keep_ratio=True)
             for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='ResizeToMultiple', size_divisor=14)],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='ValidateSegSample', num_classes=4, on_error='raise')],
            [dict(type='PackSegInputs')]
        ])
]
dataset_common = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=True)
train_dataloader = dict(
    batch_size=4,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/training', seg_map_path='annotations/training'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        **dataset_common,
        data_prefix=dict(img_path='images/validation', seg_map_path='annotations/validation'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

