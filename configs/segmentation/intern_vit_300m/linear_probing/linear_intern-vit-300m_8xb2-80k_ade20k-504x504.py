# Linear probing with InternViT-300M-448px (24 blocks, 1024 wide): the 6B recipe with the last
# block (23) as the probed feature. No reference number.
_base_ = ['../../intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_ade20k-504x504.py']
model = dict(
    backbone=dict(
        arch='300m',
        pretrain_size=448,
        out_indices=[23],
        init_cfg=dict(checkpoint='pretrained/intern_vit_300m_448px')),
    decode_head=dict(in_channels=1024))
