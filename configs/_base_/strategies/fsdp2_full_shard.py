# FSDP2 (torch.distributed.fsdp.fully_shard) through MMEngine's FlexibleRunner: parameters,
# gradients and AdamW states sharded over all ranks (ZeRO-3 / FULL_SHARD). Each InternViT block
# is gathered for its forward, freed, gathered again for its backward. Blocks compute in bf16
# (gradients reduced in float32); sharded weights and optimizer states stay float32; stem, neck
# and heads (the root group) compute in float32. An AmpOptimWrapper in the training config is
# replaced by an OptimWrapper (mixed precision comes from here).
# Checkpoints are folders (torch.distributed.checkpoint); ExportConsolidatedHook or
# engine.checkpoints.consolidate_checkpoint writes the single file tools/test.py loads.
# Needs `custom_imports` to include 'engine' (FSDP2Strategy lives in engine/strategies/fsdp2.py).
runner_type = 'FlexibleRunner'
strategy = dict(
    type='FSDP2Strategy',
    wrap_modules=['Block'],  # backbones.layers.Block: one shard group per InternViT block
    mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'),
    reshard_after_forward=True)
