# The swap recipe at demo scale, to try on a CPU in about a minute: mmseg's own UPerNet model
# base, SGD schedule and runtime (all through `mmseg::`, as configs/segmentation/swap_examples/
# does for InternViT-300M) with the ResNet replaced by a tiny InternViT (4 blocks, 64 wide, no pretrained weights) and
# the simple feature pyramid, on the synthetic ADE20K-format dataset of `make demo`:
#
#   python tools/dataset_converters/make_synthetic_ade.py data/synthetic_ade   # or: make demo
#   python tools/train.py configs/demo/upernet_intern-vit-tiny-swap_1xb4-200_synthetic-112x112.py
#
# 200 iterations, then one validation on the 50 synthetic validation images (seconds): measured
# 34 s in all and 40.8 mIoU on 2 CPU cores (load 1.5; mmseg's SGD lr 0.01 learns slowly from
# scratch: a trial of the recipe, not a result). Only the backbone, neck, head widths, class
# count and the iteration count differ from mmseg's files.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', '../_base_/datasets/synthetic_ade_112x112.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_20k.py'
]
custom_imports = dict(imports=['backbones', 'segmentation'], allow_failed_imports=False)

crop_size = (112, 112)
num_classes = 4  # the synthetic dataset: background, stripes, checker, dots
model = dict(
    pretrained=None,  # the R-50 base names an ImageNet ResNet here
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='InternViT',
        arch=dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0,
                  norm_type='rms_norm', qk_norm=True, qkv_bias=False, layer_scale_init=0.1),
        img_size=112,
        patch_size=14,
        out_indices=[0, 1, 2, 3]),
    neck=dict(type='SimpleFeaturePyramid', in_channels=64, rescales=(4, 2, 1, 0.5),
              norm_cfg=dict(type='SyncBN', requires_grad=True)),
    decode_head=dict(in_channels=[64] * 4, channels=64, num_classes=num_classes),
    auxiliary_head=dict(in_channels=64, channels=32, num_classes=num_classes))

max_iters = 200
param_scheduler = [dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=max_iters,
                        by_epoch=False)]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_iters))
train_dataloader = dict(num_workers=1)
work_dir = 'work_dirs/swap_tiny'
