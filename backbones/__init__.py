"""Task-agnostic InternViT model code (no mmseg/mmdet imports).

Importing this package registers every module in mmengine's root registries (``MODELS``,
``OPTIM_WRAPPER_CONSTRUCTORS``, ``HOOKS``, ``STRATEGIES``, the ``atomic_local`` file backend), so
that configs of mmseg and mmdet resolve them through ``custom_imports``.
"""
from .adapter import InternViTAdapter
from .checkpoint import convert_to_internvit, detect_layout, load_pretrained, read_state_dict
from .engine import AtomicLocalBackend, NonFiniteLossHook
from .intern_vit import ARCH_PRESETS, InternViT, count_parameters
from .layer_decay import InternViTLayerDecayOptimizerConstructor
from .pyramid import SimpleFeaturePyramid
from .safe_load import SafeCheckpointStateHook
from .strategies import DeepSpeedZeroStrategy, ExportConsolidatedHook, FSDP2Strategy

__all__ = [
    'InternViT', 'InternViTAdapter', 'SimpleFeaturePyramid', 'ARCH_PRESETS', 'count_parameters',
    'convert_to_internvit', 'detect_layout', 'load_pretrained', 'read_state_dict',
    'InternViTLayerDecayOptimizerConstructor', 'AtomicLocalBackend', 'NonFiniteLossHook',
    'SafeCheckpointStateHook', 'FSDP2Strategy', 'DeepSpeedZeroStrategy', 'ExportConsolidatedHook'
]
