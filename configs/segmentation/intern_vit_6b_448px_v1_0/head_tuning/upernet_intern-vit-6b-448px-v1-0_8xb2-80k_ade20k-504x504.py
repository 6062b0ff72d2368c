# Head tuning with InternViT-6B-448px-V1.0 (45 blocks): pyramid from blocks [11, 22, 33, 44].
_base_ = ['../../intern_vit_6b/head_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py']
model = dict(
    backbone=dict(
        arch='6b-448px',
        pretrain_size=448,
        out_indices=[11, 22, 33, 44],
        init_cfg=dict(checkpoint='pretrained/intern_vit_6b_448px_v1_0')))
# The reference counts 45 layers for its layer-decay constructor here too (rate 1.0).
optim_wrapper = dict(paramwise_cfg=dict(num_layers=45))
