# Mask R-CNN on InternViT-6B as the two published InternViT-6B detection recipes build it
# (OpenGVLab/InternVL-MMDetSeg `mmdetection/configs/intern_vit_6b/head_tuning/
# mask_rcnn_intern_vit_6b_fpn_1x_coco_bs16_frozen.py` and OpenGVLab/PIIP `mmdetection/configs/
# piip/baseline/mask_rcnn_internvit_6b_fpn_1x_coco_bs16_ms.py`; both are mmdet 2.x's
# `mask_rcnn_r50_fpn.py` with only the backbone and the FPN input channels replaced).
#
# Backbone: patch 16 (the 14 x 14 pretrained kernel resized to 16 x 16 by plain bicubic
# interpolation on load), no cls token (the blocks see patch tokens only; pos_embed keeps its
# unused cls slot, the checkpoint's cls_token is dropped), and only block 47's output, which
# feeds all four pyramid levels. The top configs set the position-embedding grid (img_size),
# attention, freezing and drop path of each recipe.
#
# Neck: [SimpleFeaturePyramid, FPN], built by MMEngine as a Sequential (state-dict names
# neck.0.* and neck.1.*). The pyramid is the reference's up1..up4 (4x: ConvT, channel
# LayerNorm eps 1e-6, GELU, ConvT; 2x: ConvT; 1x; 0.5x: 2x2 max-pool) with no projection and no
# norm after the levels, so mmdet's FPN receives 3200 channels at strides 4, 8, 16 and 32 and
# adds a max-pooled P6 (stride 64). RPN with one conv, Shared2FC box head and 4-conv mask head,
# no norms: mmdet 3.x's `_base_/models/mask-rcnn_r50_fpn.py`, unchanged.
model = dict(
    type='MaskRCNN',
    # ImageNet mean/std on RGB, pad to 32 (InternVL); the PIIP config overrides them.
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(
        type='InternViT',
        arch='6b',
        patch_size=16,
        patch_embed_resize='bicubic',
        with_cls_token=False,
        out_indices=[47],
        with_cp=True),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=3200, out_channels=None,
             rescales=(4, 2, 1, 0.5), norm_cfg=dict(type='LN', eps=1e-6)),
        dict(type='FPN', in_channels=[3200, 3200, 3200, 3200], out_channels=256, num_outs=5),
    ],
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64]),
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
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes=80,
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
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=80,
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
