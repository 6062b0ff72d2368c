# InternViT-300M (frozen, bf16) + ViT-Adapter + UperNet on ADE20K, 512x512 crops, 8 GPUs x 2
# images, 80k iterations: the InternViT-6B adapter recipe (InternVL-MMDetSeg's) applied to the
# 300M encoder (InternVL publishes no 300M adapter recipe).
#
# The 448px InternViT-300M weights have patch 14 and a 32x32 position grid (448 / 14): at patch
# 16 the loader resizes the patch kernel to 16x16 (plain bicubic), and the grid already is the
# 32x32 grid of a 512 crop, so pos_embed loads unchanged.
_base_ = [
    '../../intern_vit_6b/vit_adapter/upernet_intern-vit-6b-adapter_8xb2-80k_ade20k-512x512.py'
]

pretrained = 'pretrained/InternViT-300M-448px'  # Hugging Face directory, .safetensors or .pth

model = dict(
    backbone=dict(
        arch='300m',
        pretrain_size=448,
        interaction_indexes=[[0, 5], [6, 11], [12, 17], [18, 23]],
        deform_num_heads=16,  # value width 1024 * 0.25 = 256 -> 16 per head
        init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024], channels=1024),
    auxiliary_head=dict(in_channels=1024))
# The same decay rule over the 24 blocks.
optim_wrapper = dict(paramwise_cfg=dict(num_layers=24))
