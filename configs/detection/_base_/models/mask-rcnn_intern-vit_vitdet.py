# Our own ViTDet-style Mask R-CNN on a plain InternViT (patch 14) through a simple feature
# pyramid; not a published InternViT recipe (the two published InternViT-6B recipes are in
# mask-rcnn_intern-vit-6b_fpn.py) and no published number comes with it.
#
# Strides. A patch-14 ViT has one token grid at stride 14; SimpleFeaturePyramid rescales four of
# its block outputs by 4, 2, 1 and 1/2, i.e. strides 3.5, 7, 14 and 28, and FPN's max-pooled P6
# is stride 56. The anchor generator and both RoI extractors are given exactly these strides
# (RoIAlign's spatial_scale = 1 / stride, anchor centres at multiples of the stride), while the
# anchor base sizes stay 4, 8, 16, 32, 64 so that anchors keep the usual 32-512 px sizes. The
# pretrained patch-14 stem is used as it is (no resampling). Inputs need not be multiples of 14:
# the backbone pads to the next multiple and the anchors outside the padded image are invalid.
#
# Neck: [SimpleFeaturePyramid(3200 -> 256 per level, LayerNorm), FPN(256 -> 256, 5 levels)];
# mmengine builds a list of neck configs as a Sequential. RPN with two convs and box/mask heads
# with four convs each (GroupNorm), as in ViTDet's Mask R-CNN.
head_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
pyramid_strides = [3.5, 7, 14, 28]

model = dict(
    type='MaskRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        # InternViT was pretrained with the ImageNet mean/std on RGB images.
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32,
        # Training batches are padded to exactly the 1024x1024 crop (LSJ).
        batch_augments=[dict(type='BatchFixedSizePad', size=(1024, 1024), pad_mask=True)]),
    backbone=dict(
        type='InternViT',
        arch='6b',
        img_size=1024,
        patch_size=14,
        out_indices=[11, 23, 35, 47],
        drop_path_rate=0.0,
        with_cp=False),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=3200, out_channels=256,
             rescales=(4, 2, 1, 0.5), norm_cfg=dict(type='LN')),
        dict(type='FPN', in_channels=[256, 256, 256, 256], out_channels=256, num_outs=5,
             norm_cfg=head_norm_cfg),
    ],
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        num_convs=2,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=pyramid_strides + [56],
            base_sizes=[4, 8, 16, 32, 64]),
        bbox_coder=dict(
            type='DeltaXYWHBBoxCoder',
            target_means=[0.0, 0.0, 0.0, 0.0],
            target_stds=[1.0, 1.0, 1.0, 1.0]),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=pyramid_strides),
        bbox_head=dict(
            type='Shared4Conv1FCBBoxHead',
            in_channels=256,
            conv_out_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
            norm_cfg=head_norm_cfg,
            bbox_coder=dict(
                type='DeltaXYWHBBoxCoder',
                target_means=[0.0, 0.0, 0.0, 0.0],
                target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=pyramid_strides),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
            norm_cfg=head_norm_cfg,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.7,
                neg_iou_thr=0.3,
                min_pos_iou=0.3,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=256,
                pos_fraction=0.5,
                neg_pos_ub=-1,
                add_gt_as_proposals=False),
            allowed_border=-1,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(
            nms_pre=2000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            assigner=dict(
                type='MaxIoUAssigner',
                pos_iou_thr=0.5,
                neg_iou_thr=0.5,
                min_pos_iou=0.5,
                match_low_quality=True,
                ignore_iof_thr=-1),
            sampler=dict(
                type='RandomSampler',
                num=512,
                pos_fraction=0.25,
                neg_pos_ub=-1,
                add_gt_as_proposals=True),
            mask_size=28,
            pos_weight=-1,
            debug=False)),
    test_cfg=dict(
        rpn=dict(
            nms_pre=1000,
            max_per_img=1000,
            nms=dict(type='nms', iou_threshold=0.7),
            min_bbox_size=0),
        rcnn=dict(
            score_thr=0.05,
            nms=dict(type='nms', iou_threshold=0.5),
            max_per_img=100,
            mask_thr_binary=0.5)))
