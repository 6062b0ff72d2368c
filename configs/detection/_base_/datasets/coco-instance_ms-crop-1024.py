# COCO 2017 instance segmentation, DETR-style multi-scale training with a 1024 x 1024 crop (the
# data of PIIP's InternViT-6B Mask R-CNN baseline): flip 0.5 first, then one of two policies
# with equal probability,
#   (a) resize the short side to one of 480, 512, ..., 800 (long side at most 1333), or
#   (b) resize the short side to 400, 500 or 600, crop a random h x w with h and w each in
#       [384, 600] (absolute_range), then resize as in (a);
# then a random crop of at most 1024 x 1024. The crops clip boxes, drop the instances left
# without area and keep an image left without any (allow_negative_crop), as mmdet 2.x did;
# there is no extra annotation filter. Normalisation (mean = std = 127.5) and padding (to 64)
# are the model's data preprocessor. Test: resize to (1333, 800) keeping the ratio, no flip.
# The scales are written (short, long) as in the reference; with keep_ratio the order of the
# two numbers does not matter.
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
backend_args = None
multi_scales = [(s, 1333) for s in range(480, 801, 32)]  # 480, 512, ..., 800

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomChoice',  # uniform, as mmdet 2.x's AutoAugment
        transforms=[
            [dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True)],
            [
                dict(type='RandomChoiceResize', scales=[(400, 1333), (500, 1333), (600, 1333)],
                     keep_ratio=True),
                dict(type='RandomCrop', crop_type='absolute_range', crop_size=(384, 600),
                     allow_negative_crop=True),
                dict(type='RandomChoiceResize', scales=multi_scales, keep_ratio=True),
            ],
        ]),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=(1024, 1024),
         allow_negative_crop=True),
    dict(type='PackDetInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=(1333, 800), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'))
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_train2017.json',
        data_prefix=dict(img='train2017/'),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
        backend_args=backend_args))
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args))
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args)
test_evaluator = val_evaluator
