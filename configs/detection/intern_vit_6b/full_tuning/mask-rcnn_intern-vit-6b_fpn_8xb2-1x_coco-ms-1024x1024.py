# PIIP's InternViT-6B Mask R-CNN 1x baseline, full tuning: 53.8 box AP / 48.1 mask AP on COCO
# val2017 (Parameter-Inverted Image Pyramid Networks, NeurIPS 2024; OpenGVLab/PIIP
# `mmdetection/configs/piip/baseline/mask_rcnn_internvit_6b_fpn_1x_coco_bs16_ms.py`).
# InternViT-6B-224px, everything trained; DETR-style multi-scale training with 1024 x 1024 crops,
# test at (1333, 800); 8 GPUs x 2 images. This toolkit has not re-run it.
#
# Backbone: patch 16 (bicubic-resized 14 x 14 kernel), no cls token, block 47 into every level,
# global attention in every block (PIIP's InternViT-6B runs use no window attention);
# pos_embed at the 224 / 16 = 14 grid (the checkpoint's 16 x 16 grid is resampled once on load),
# resampled bicubically to each input's token grid; drop path 0.4; activation checkpointing.
# Optimisation: AdamW lr 1e-4, wd 0.05, layer-wise lr decay 0.95 over the 48 blocks (stem
# 0.95^49, block i 0.95^(48-i), pyramid, FPN and heads 1), warmup 500 iterations, no clipping.
# Precision and sharding: the reference trains under DeepSpeed ZeRO-1 bf16; here FSDP2 (bf16
# blocks, float32 master weights) by default, DeepSpeed ZeRO-1 bf16 with
# `tools/train.py CONFIG --strategy deepspeed_zero1`.
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit-6b_fpn.py',
    '../../_base_/datasets/coco-instance_ms-crop-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
    # A trainable 6B backbone needs sharding: FSDP2 through MMEngine's FlexibleRunner.
    # `tools/train.py --strategy NAME` swaps the engine.
    '../../../_base_/strategies/fsdp2_full_shard.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/intern_vit_6b_224px.pth'
model = dict(
    data_preprocessor=dict(mean=[127.5, 127.5, 127.5], std=[127.5, 127.5, 127.5],
                           pad_size_divisor=64),
    backbone=dict(
        img_size=224,
        window_size=None,
        drop_path_rate=0.4,
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(
    constructor='InternViTLayerDecayOptimizerConstructor',
    # The reference exempts 1-D parameters and names ending in '.bias' from weight decay; its
    # pos_embed (3-D) decays.
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95, no_decay_suffixes=['.bias']))

# Evaluate every epoch (val_interval=1 in the schedule); keep the last checkpoint only.
default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=1))
# Checkpoints are sharded folders; the final model is also written as one file for tools/test.py.
custom_hooks = [dict(type='ExportConsolidatedHook', filename='consolidated.pth')]
