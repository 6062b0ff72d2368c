# Head tuning with InternViT-300M-448px (24 blocks, 1024 wide): pyramid from blocks
# [5, 11, 17, 23]; otherwise the 6B recipe (UperNet 1536 channels). No reference number.
_base_ = ['../../intern_vit_6b/head_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py']
model = dict(
    backbone=dict(
        arch='300m',
        pretrain_size=448,
        out_indices=[5, 11, 17, 23],
        init_cfg=dict(checkpoint='pretrained/intern_vit_300m_448px')),
    neck=dict(in_channels=1024),
    decode_head=dict(in_channels=[1024, 1024, 1024, 1024]),
    auxiliary_head=dict(in_channels=1024))
optim_wrapper = dict(paramwise_cfg=dict(num_layers=24))
