# Our ViTDet-style variant (no published recipe or number). Mask R-CNN 1x (500 warmup
# iterations, mmdet's 1x), COCO, 1024 LSJ crops: InternViT-300M fully tuned through a simple
# feature pyramid + FPN. Weights: InternViT-300M-448px (HF directory).
# Full tuning: AdamW with layer-wise lr decay 0.9 over the 24 blocks, drop path 0.4, bf16
# autocast, activation checkpointing. No published reference for 300M: these follow
# ViT-L detection recipes (ViTDet / ViT-Adapter) and are untuned.
# Window attention (14x14 tokens) in every block except the last block of each quarter
# ([5, 11, 17, 23]), which keeps global attention (ViTDet style).
_base_ = [
    '../../_base_/models/mask-rcnn_intern-vit_vitdet.py',
    '../../_base_/datasets/coco-instance_lsj-1024.py',
    '../../_base_/schedules/schedule_1x.py',
    '../../_base_/default_runtime.py',
]
custom_imports = dict(imports=['backbones', 'engine', 'detection'], allow_failed_imports=False)

pretrained = 'pretrained/InternViT-300M-448px'
head_norm_cfg = dict(type='GN', num_groups=32, requires_grad=True)
model = dict(
    backbone=dict(
        arch='300m',
        out_indices=[5, 11, 17, 23],
        drop_path_rate=0.4,
        with_cp=True,
        window_size=14,
        global_indices=[5, 11, 17, 23],
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=[
        dict(type='SimpleFeaturePyramid', in_channels=1024, out_channels=256,
             rescales=(4, 2, 1, 0.5), norm_cfg=dict(type='LN')),
        dict(type='FPN', in_channels=[256, 256, 256, 256], out_channels=256, num_outs=5,
             norm_cfg=head_norm_cfg),
    ])
optim_wrapper = dict(
    constructor='InternViTLayerDecayOptimizerConstructor',
    paramwise_cfg=dict(num_layers=24, layer_decay_rate=0.9))
