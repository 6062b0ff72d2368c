# DeepSpeed ZeRO stage 1 (optimizer states sharded; bf16 weights and gradients replicated) via
# DeepSpeedZeroStrategy (MMEngine's DeepSpeedStrategy taking our optim_wrapper configs: the
# layer-decay constructor is kept, dtype/clip_grad/accumulative_counts become DeepSpeed's bf16 /
# gradient_clipping / gradient_accumulation_steps). The reference InternVL recipe shards like
# this. Needs `pip install deepspeed` on the CUDA machines; without it building the strategy
# raises an ImportError. Checkpoints are DeepSpeed folders.
runner_type = 'FlexibleRunner'
strategy = dict(
    type='DeepSpeedZeroStrategy',
    bf16=dict(enabled=True),
    zero_optimization=dict(
        stage=1,
        allgather_partitions=True,
        allgather_bucket_size=2e8,
        reduce_scatter=True,
        reduce_bucket_size=2e8,
        overlap_comm=True,
        contiguous_gradients=True))
