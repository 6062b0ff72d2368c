# InternVL's frozen Mask R-CNN (OpenGVLab/InternVL-MMDetSeg, `mmdetection/configs/intern_vit_6b/
# head_tuning/mask_rcnn_intern_vit_6b_fpn_1x_coco_bs16_frozen.py`; no COCO number published):
# InternViT-6B-224px frozen, the simple pyramid, FPN and the Mask R-CNN heads trained.
# COCO 1x, single scale (1333, 800), 8 GPUs x 2 images.
#
# Backbone: patch 16 (bicubic-resized 14 x 14 kernel), no cls token, block 47 into every level;
# pos_embed at the 256 / 16 = 16 grid (the checkpoint's own 16 x 16 grid, so nothing is
# resampled on load), resampled bicubically to each input's token grid; window attention in all
# 48 blocks, 16 x 16-token windows over the grid zero padded to a multiple of 16, the padded
# tokens unmasked (window_pad_mask=False), as the reference computes it.
# Optimisation: AdamW lr 1e-4, wd 0.05 on the trainable weights except biases and 1-D parameters
# (the reference's layer-decay constructor with rate 1.0, i.e. no decay across layers), warmup
# 500 iterations, clip gradients at norm 1.0 (the reference's DeepSpeed json).
# Precision: the reference holds the frozen ViT in fp16 under DeepSpeed fp16 (dynamic loss
# scale); here the frozen weights are bf16 and training runs in bf16 autocast (no loss scale).
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit-6b_fpn.py',
    '../../_base_/datasets/coco-instance_1333x800.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/intern_vit_6b_224px.pth'
model = dict(
    backbone=dict(
        img_size=256,
        window_size=16,
        window_pad_mask=False,
        drop_path_rate=0.0,
        frozen=True,
        frozen_dtype='bfloat16',
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)))

optim_wrapper = dict(
    clip_grad=dict(max_norm=1.0, norm_type=2),
    constructor='InternViTLayerDecayOptimizerConstructor',
    # The reference exempts 1-D parameters and names ending in '.bias' from weight decay.
    paramwise_cfg=dict(num_layers=48, layer_decay_rate=1.0, no_decay_suffixes=['.bias']))

# Evaluate every epoch (val_interval=1 in the schedule) and keep the best bbox mAP.
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10),
    checkpoint=dict(type='CheckpointHook', interval=1, max_keep_ckpts=2, save_best='auto'))
