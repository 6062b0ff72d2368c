"""Checkpoint I/O of a training run: atomic writes, formats on disk, resume search,
weights-only loading, sharded folders."""
from .atomic import AtomicLocalBackend, atomic_write, atomic_write_bytes, remove_partial_writes
from .formats import (EXTRA_FILE, is_complete_checkpoint, is_deepspeed_checkpoint,
                      is_sharded_checkpoint)
from .resume import find_resumable_checkpoint
from .safe_load import (load_from_local_weights_only, patch_mmengine_checkpoint_loading,
                        resave_weights_only_safe)
from .sharded import consolidate_checkpoint, safe_dcp_reader

__all__ = [
    'AtomicLocalBackend', 'atomic_write', 'atomic_write_bytes', 'remove_partial_writes',
    'EXTRA_FILE', 'is_complete_checkpoint', 'is_deepspeed_checkpoint', 'is_sharded_checkpoint',
    'find_resumable_checkpoint', 'load_from_local_weights_only',
    'patch_mmengine_checkpoint_loading', 'resave_weights_only_safe', 'consolidate_checkpoint',
    'safe_dcp_reader'
]
