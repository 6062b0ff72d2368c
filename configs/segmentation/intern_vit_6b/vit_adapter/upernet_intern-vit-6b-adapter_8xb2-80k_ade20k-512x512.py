# ViT-Adapter (InternVL reference: 58.1 mIoU), as InternVL-MMDetSeg's
# upernet_intern_vit_adapter_6b_512_80k_ade20k_bs16_lr4e-5.py: frozen InternViT-6B (224px
# release, held in bf16) with a trainable ViT-Adapter (interactions over blocks 0-11, 12-23,
# 24-35, 36-47; cffn and deform ratios 0.25) into UperNet (1536 channels) + auxiliary FCN head, on
# ADE20K with 512x512 crops, 8 GPUs x 2 images, 80k iterations of the common schedule (AdamW
# 4e-5, warmup 1500 times poly over the whole run, evaluation every 1000 keeping the best mIoU).
#
# Patch 16: the 14x14 patch kernel of the checkpoint is resized to 16x16 by plain bicubic
# interpolation and its 16x16 position grid (224 / 14) once, bicubically, to the 32x32 grid of
# the 512 crop (pos_embed is held at 1 + 32 * 32 tokens), both on load.
_base_ = [
    '../../../_base_/datasets/ade20k_504x504.py',
    '../../../_base_/default_runtime.py',
    '../../../_base_/schedules/schedule_80k.py',
]
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)  # heads only; the Runner makes it BN on 1 GPU

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
        img_size=512,  # pos_embed at the 32x32 crop grid
        patch_size=16,
        pretrain_size=224,
        patch_embed_resize='bicubic',  # F.interpolate of the 14x14 kernel, no rescaling (ref.)
        with_cls_token=False,  # the reference adapter deletes the cls token (its pos slot stays)
        drop_path_rate=0.0,
        with_cp=True,
        attn_impl='auto',  # flash-attn on CUDA when installed, else sdpa
        frozen=True,  # the ViT only: the adapter trains
        # The reference casts the whole backbone (ViT and adapter) to fp16 and trains with
        # DeepSpeed ZeRO-1 fp16 (dynamic loss scale); we hold the frozen ViT in bf16 and run
        # the adapter and heads under bf16 autocast (the schedule's AmpOptimWrapper) instead.
        frozen_dtype='bfloat16',
        interaction_indexes=[[0, 11], [12, 23], [24, 35], [36, 47]],
        conv_inplane=64,
        n_points=4,
        deform_num_heads=25,  # value width 3200 * 0.25 = 800: 32 per head
        deform_ratio=0.25,
        cffn_ratio=0.25,
        with_cffn=True,
        init_values=0.0,  # injector gamma (the ViT's LayerScale comes from the checkpoint)
        add_vit_feature=True,
        vit_feature_source='final',  # the last ViT output, resized x4/x2/x1/x0.5, to all levels
        use_extra_extractor=True,
        norm_cfg=dict(type='LN', eps=1e-6),  # SPM / output: channel LayerNorm in float32
        interaction_norm_eps=1e-5,  # the reference passes nn.LayerNorm (default eps 1e-5)
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
# distortion; padding to 512 (image 0, labels 255) in the data preprocessor.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='ValidateSegSample', num_classes=150, on_error='raise'),
    dict(type='RandomResize', scale=(2048, 512), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs')
]
# Test: the short side exactly 512 with the long side uncapped (the reference's SETR_Resize),
# so every slide window is 512x512; no ResizeToMultiple (commented out in the reference, and
# the adapter takes any size).
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(1000000, 512), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs')
]
# Multi-scale + flip TTA (`tools/test.py --tta`) at this crop; the 58.1 is single-scale.
tta_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='Resize', scale=(1000000, int(512 * r)), keep_ratio=True)
             for r in tta_ratios],
            [dict(type='RandomFlip', prob=0., direction='horizontal'),
             dict(type='RandomFlip', prob=1., direction='horizontal')],
            [dict(type='LoadAnnotations', reduce_zero_label=True)],
            [dict(type='PackSegInputs')]
        ])
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# The reference's layer-decay constructor (rate 0.95 over 48 blocks): with the ViT frozen every
# trainable parameter is past the last block, lr scale 1. No weight decay for 1-D parameters
# (norms, injector gamma) and biases; level_embed (2-D) decays, since the reference's name
# exemptions never match (copied quirk: no_decay_suffixes=['.bias']).
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95, no_decay_suffixes=['.bias']))
