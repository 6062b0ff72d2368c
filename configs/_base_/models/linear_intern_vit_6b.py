# InternViT-6B (224px release) with the linear head of the InternVL linear-probing recipe:
# batch norm on the 3200-d features of one block, then a 1x1 classifier (no dropout).
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
        out_indices=[44],
        drop_path_rate=0.0,
        with_cp=True,
        attn_impl='auto',  # flash-attn on CUDA when installed, else sdpa
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
    decode_head=dict(
        type='InternViTLinearHead',
        in_channels=3200,
        in_index=0,
        num_classes=150,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=(504, 504), stride=(322, 322)))
