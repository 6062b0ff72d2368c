# InternViT-6B (224px release, 48 blocks) + simple feature pyramid + UperNet (1536 channels) with
# an auxiliary FCN head, as in the InternVL segmentation recipes. Recipes set freezing, drop path.
norm_cfg = dict(type='SyncBN', requires_grad=True)  # the Runner turns it into BN on one process
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(504, 504))
model = dict(
    type='EncoderDecoder',
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='InternViT',
        arch='6b',
        img_size=504,
        patch_size=14,
        pretrain_size=224,
        out_indices=[11, 23, 35, 47],
        drop_path_rate=0.0,
        with_cp=True,
        attn_impl='auto',  # flash-attn on CUDA when installed, else sdpa
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
    neck=dict(
        type='SimpleFeaturePyramid',
        in_channels=3200,
        rescales=(4, 2, 1, 0.5),
        # The reference's 4x level: ConvT, LayerNorm over channels (eps 1e-6, in float32), GELU,
        # ConvT; transposed convs initialised N(0, sqrt(2 / (k * k * out_channels))).
        norm_cfg=dict(type='LN', eps=1e-6)),
    decode_head=dict(
        type='UPerHead',
        in_channels=[3200, 3200, 3200, 3200],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=1536,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=3200,
        in_index=2,
        channels=1536,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    # Slide inference over 504x504 windows with stride 322.
    test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))
