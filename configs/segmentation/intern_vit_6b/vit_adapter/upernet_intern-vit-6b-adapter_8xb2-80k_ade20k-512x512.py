# ViT-Adapter (InternVL reference: 58.1 mIoU): frozen InternViT-6B held in bf16 with a trainable
# ViT-Adapter (interactions after blocks 11, 23, 35, 47; cffn and deform ratios 0.25) into
# UperNet (1536 channels) + auxiliary FCN head, on ADE20K with 512x512 crops, 8 GPUs x 2 images,
# 80k iterations of the common schedule (AdamW 4e-5, warmup 1500, poly, bf16).
#
# Patch 16: the checkpoint loader resamples the patch-14 weights (patch embedding 14x14 -> 16x16
# kernel; position grid 16x16 -> 14x14 for pretrain_size 224 at patch 16), and the forward
# resamples the position grid to each input (32x32 for 512 crops).
_base_ = [
    '../../../_base_/datasets/ade20k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # the Runner turns it into BN on one process

model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='InternViTAdapter',
        arch='6b',
        img_size=512,
        patch_size=16,
        pretrain_size=224,
        drop_path_rate=0.0,
        with_cp=True,
        attn_impl='auto',  # flash-attn on CUDA when installed, else sdpa
        frozen=True,  # the ViT only: the adapter trains
        frozen_dtype='bfloat16',
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        conv_inplane=64,
        n_points=4,
        deform_num_heads=25,  # value width 3200 * 0.25 = 800: 32 per head
        deform_ratio=0.25,
        cffn_ratio=0.25,
        init_values=0.0,
        add_vit_feature=True,
        use_extra_extractor=True,
        norm_cfg=norm_cfg,
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')),
    # no neck: the adapter already returns strides 4, 8, 16, 32
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
    # Slide inference over 512x512 windows with stride 341.
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))

# ADE20K at 512: resize to (2048, 512) with ratio 0.5-2.0, random 512 crop, flip, photometric
# distortion; the test short side is 512 (any size works for the adapter: no multiple of 14).
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(2048, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# No weight decay on norms and the adapter's level embeddings.
optim_wrapper = dict(
    optimizer=dict(weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, custom_keys=dict(level_embed=dict(decay_mult=0.0))))
