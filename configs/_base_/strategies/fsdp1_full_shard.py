# FSDP1 (FullyShardedDataParallel) with MMEngine's own FSDPStrategy. CUDA only: FSDP1 refuses to
# run without an accelerator. One FSDP unit per InternViT block, FULL_SHARD, use_orig_params so
# that layer-wise lr decay sees the original parameter names. No FSDP mixed precision: the
# training config's AmpOptimWrapper (bf16 autocast) does it, since FSDP1's MixedPrecision would
# also cast the heads, which receive InternViT's float32 maps.
# state_dict_cfg='full': checkpoints are ordinary single files gathered on rank 0 (loadable by
# tools/test.py; for 6B each one holds 24 GB of weights and 47 GB of AdamW states). Use 'local'
# for per-rank files (resume needs the same number of GPUs).
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDPStrategy',
    model_wrapper=dict(
        auto_wrap_policy=dict(type='internvit_block_auto_wrap_policy'),
        sharding_strategy='FULL_SHARD',
        use_orig_params=True),
    state_dict_cfg='full')
