# InternViT-300M (frozen, bf16) + ViT-Adapter + UperNet on ADE20K, 512x512 crops, 8 GPUs x 2
# images, 80k iterations: the InternViT-6B adapter recipe applied to the 300M encoder.
#
# The 448px InternViT-300M weights have patch 14 (32x32 position grid); at patch 16 with
# pretrain_size 448 the loader resamples the patch embedding to 16x16 and the position grid to
# 28x28, and the forward resamples it to 32x32 for 512 crops.
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
