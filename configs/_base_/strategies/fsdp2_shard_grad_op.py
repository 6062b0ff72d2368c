# FSDP2 like fsdp2_full_shard.py, but the gathered (bf16) parameters are kept from forward to
# backward (SHARD_GRAD_OP, ZeRO-2-like): one all-gather per block per step instead of two, at
# the cost of holding every block's bf16 weights during the step (2 bytes per backbone
# parameter; 11.8 GB for InternViT-6B).
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDP2Strategy',
    wrap_modules=['Block'],
    mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'),
    reshard_after_forward=False)
