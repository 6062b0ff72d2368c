# DeepSpeed ZeRO stage 3: weights, gradients and optimizer states sharded. The 16-bit weights
# are gathered when saving so that a checkpoint without optimizer state is a single file.
# See deepspeed_zero1.py.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedZeroStrategy',
    bf16=dict(enabled=True),
    zero_optimization=dict(
        stage=3,
        overlap_comm=True,
        contiguous_gradients=True,
        reduce_bucket_size=2e8,
        stage3_prefetch_bucket_size=2e8,
        stage3_param_persistence_threshold=1e5,
        stage3_gather_16bit_weights_on_model_save=True))
