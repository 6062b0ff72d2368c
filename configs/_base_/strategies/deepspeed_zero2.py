# DeepSpeed ZeRO stage 2: optimizer states and gradients sharded, bf16 weights replicated.
# See deepspeed_zero1.py.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedZeroStrategy',
    bf16=dict(enabled=True),
    zero_optimization=dict(
        stage=2,
        allgather_partitions=True,
        allgather_bucket_size=2e8,
        reduce_scatter=True,
        reduce_bucket_size=2e8,
        overlap_comm=True,
        contiguous_gradients=True))
