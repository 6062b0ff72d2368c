# COCO 2017 instance segmentation, DETR-style multi-scale training with a 1024 x 1024 crop (the
# data of PIIP's InternViT-6B Mask R-CNN baseline): flip 0.5 first, then one of two policies
# with equal probability,
#   (a) resize the short side to one of 480, 512, ..., 800 (long side at most 1333), or
#   (b) resize the short side to 400, 500 or 600, crop a random h x w with h and w each in
#       [384, 600] (absolute_range), then resize as in (a);
# then a random crop of at most 1024 x 1024. The crops clip boxes, drop the instances left
# without area and keep an image left without any (allow_negative_crop), as mmdet 2.x did;
# there is no extra annotation filter. Normalisation (mean = std = 127.5) and padding (to 64)
# are the model's data preprocessor. Test (and the loaders, evaluator): the single-scale base's,
# resize to (1333, 800) keeping the ratio, no flip.
# The scales are written (short, long) as in the reference; with keep_ratio the order of the
# two numbers does not matter.
_base_ = ['./coco-instance_1333x800.py']
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
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
