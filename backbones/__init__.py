"""InternViT model code, task-agnostic (no mmseg/mmdet imports, nothing of the training engine).

* ``layers.py``: RMSNorm, LayerScale, Attention (sdpa | flash_attn | naive), MLP, PatchEmbed,
  windows; ``pos_embed.py``: position-embedding resampling;
* ``intern_vit.py``: :class:`InternViT` (presets, freezing, checkpointing, position embeddings);
* ``checkpoint.py``: weight-layout detection and conversion to ours (pure functions);
* ``pyramid.py``: :class:`SimpleFeaturePyramid`; ``adapter.py``: :class:`InternViTAdapter`;
  ``ms_deform_attn.py``: multi-scale deformable attention (mmcv's op or PyTorch).

Importing this package registers the models in mmengine's root ``MODELS``, so that configs of
mmseg and mmdet resolve them through ``custom_imports``. What trains them is the ``engine``
package, which imports this one (never the other way round).
"""
from .adapter import InternViTAdapter
from .checkpoint import convert_to_internvit, detect_layout, load_pretrained, read_state_dict
from .intern_vit import ARCH_PRESETS, InternViT, count_parameters
from .pyramid import SimpleFeaturePyramid

__all__ = [
    'InternViT', 'InternViTAdapter', 'SimpleFeaturePyramid', 'ARCH_PRESETS', 'count_parameters',
    'convert_to_internvit', 'detect_layout', 'load_pretrained', 'read_state_dict'
]
