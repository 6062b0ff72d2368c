"""The training engine: what runs a model, as opposed to the model (``backbones/``).

Laid out like ``mmseg/engine`` and ``mmengine/_strategy``:

* ``strategies/``: one engine per file: ``fsdp2.py`` (:class:`FSDP2Strategy`), ``deepspeed.py``
  (:class:`DeepSpeedZeroStrategy`), ``fsdp1.py`` (block auto-wrap policy for MMEngine's FSDP1),
  ``distributed.py`` (process-group start-up on any device), ``base.py`` (what they share);
* ``checkpoints/``: ``atomic.py`` (atomic writes, the ``atomic_local`` file backend),
  ``formats.py`` (single file / FSDP2 folder / DeepSpeed folder, complete or not),
  ``resume.py`` (the checkpoint ``--resume`` continues from), ``safe_load.py`` (weights-only
  loading of MMEngine checkpoints), ``sharded.py`` (sharded folders read safely, consolidated);
* ``hooks.py``: non-finite loss, weights-only-safe checkpoint state, consolidated export;
* ``optimizers/layer_decay.py``: layer-wise lr decay (:class:`InternViTLayerDecayOptimizerConstructor`);
* ``model_wrappers.py``: DDP on CPU processes; ``dataset_checks.py``: up-front dataset path checks.

Importing this package registers every piece in mmengine's root registries (``STRATEGIES``,
``HOOKS``, ``OPTIM_WRAPPER_CONSTRUCTORS``, ``MODEL_WRAPPERS``, ``FUNCTIONS``, the
``atomic_local`` file backend); configs switch it on with
``custom_imports = dict(imports=['backbones', 'engine', ...])``. No mmseg/mmdet imports here.
"""
from .checkpoints import AtomicLocalBackend, consolidate_checkpoint
from .hooks import ExportConsolidatedHook, NonFiniteLossHook, SafeCheckpointStateHook
from .model_wrappers import CPUDistributedDataParallel
from .optimizers import InternViTLayerDecayOptimizerConstructor
from .strategies import DeepSpeedZeroStrategy, FSDP2Strategy

__all__ = [
    'AtomicLocalBackend', 'consolidate_checkpoint', 'ExportConsolidatedHook', 'NonFiniteLossHook',
    'SafeCheckpointStateHook', 'CPUDistributedDataParallel',
    'InternViTLayerDecayOptimizerConstructor', 'DeepSpeedZeroStrategy', 'FSDP2Strategy'
]
