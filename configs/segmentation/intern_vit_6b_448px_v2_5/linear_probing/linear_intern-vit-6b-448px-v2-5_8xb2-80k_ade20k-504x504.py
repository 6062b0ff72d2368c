# Linear probing with InternViT-6B-448px-V2.5 (45 blocks, position embeddings for 448px):
# the 6B recipe with the last block (44) as the probed feature.
_base_ = ['../../intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_ade20k-504x504.py']
model = dict(
    backbone=dict(
        arch='6b-448px',
        pretrain_size=448,
        out_indices=[44],
        init_cfg=dict(checkpoint='pretrained/intern_vit_6b_448px_v2_5')))
# The reference counts 45 layers for its layer-decay constructor here too (rate 1.0).
optim_wrapper = dict(paramwise_cfg=dict(num_layers=45))
