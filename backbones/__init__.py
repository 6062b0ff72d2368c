"""Task-agnostic InternViT model code (no mmseg/mmdet imports).

Importing this package registers every module in mmengine's root ``MODELS`` registry.
"""
from .checkpoint import convert_to_internvit, detect_layout, load_pretrained, read_state_dict
from .intern_vit import ARCH_PRESETS, InternViT, count_parameters

__all__ = ['InternViT', 'ARCH_PRESETS', 'count_parameters', 'convert_to_internvit',
           'detect_layout', 'load_pretrained', 'read_state_dict']
from .layer_decay import InternViTLayerDecayOptimizerConstructor  # noqa: E402,F401
from .pyramid import SimpleFeaturePyramid  # noqa: E402,F401
from .adapter import InternViTAdapter  # noqa: E402,F401
from .engine import AtomicLocalBackend, NonFiniteLossHook  # noqa: E402,F401
from .safe_load import SafeCheckpointStateHook  # noqa: E402,F401
from .strategies import DeepSpeedZeroStrategy, ExportConsolidatedHook, FSDP2Strategy  # noqa: E402,F401
