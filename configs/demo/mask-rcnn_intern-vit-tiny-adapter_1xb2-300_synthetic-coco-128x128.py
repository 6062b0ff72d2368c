# Mask R-CNN on a tiny InternViT with a ViT-Adapter (64 wide, 4 blocks, patch 14), trained from
# scratch on the CPU on the synthetic COCO-format shapes dataset:
#
#   python tools/dataset_converters/make_synthetic_coco.py data/synthetic_coco
#   python tools/train.py \
#       configs/demo/mask-rcnn_intern-vit-tiny-adapter_1xb2-300_synthetic-coco-128x128.py
#
# The same data, heads and schedule as the plain demo
# (mask-rcnn_intern-vit-tiny_1xb2-300_synthetic-coco-128x128.py), but the adapter's convolutional
# spatial prior module and its interactions give maps at strides 4/8/16/32 that a Mask R-CNN learns
# from within a few hundred iterations, where a plain ViT trained from scratch barely starts.
_base_ = ['./mask-rcnn_intern-vit-tiny_1xb2-300_synthetic-coco-128x128.py']

pyramid_strides = [4, 8, 16, 32]
model = dict(
    backbone=dict(
        _delete_=True,
        type='InternViTAdapter',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0,
                  norm_type='layer_norm', qk_norm=False, qkv_bias=True, layer_scale_init=None),
        img_size=128,
        patch_size=14,
        interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]],
        conv_inplane=16,
        deform_num_heads=4,
        n_points=4,
        deform_ratio=0.5,
        cffn_ratio=0.25,
        norm_cfg=dict(type='BN')),
    neck=dict(_delete_=True, type='FPN', in_channels=[64, 64, 64, 64], out_channels=64,
              num_outs=5),
    rpn_head=dict(anchor_generator=dict(strides=pyramid_strides + [64], base_sizes=None)),
    roi_head=dict(
        bbox_roi_extractor=dict(featmap_strides=pyramid_strides),
        mask_roi_extractor=dict(featmap_strides=pyramid_strides)))
