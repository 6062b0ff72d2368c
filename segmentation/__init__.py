"""mmseg glue: what mmseg lacks for the InternViT recipes.

Importing this package (configs do it through ``custom_imports``) registers
``InternViTLinearHead`` in ``mmseg.registry.MODELS`` and ``FewShotADE20KDataset`` /
``FewShotSegDataset`` in ``mmseg.registry.DATASETS``. Model code that is not mmseg-specific
(InternViT, SimpleFeaturePyramid, layer-wise lr decay) lives in ``backbones``.
"""
from .few_shot import (FewShotADE20KDataset, FewShotSegDataset, FewShotSubsetMixin,
                       parse_ratio, subset_indices)
from .linear_head import InternViTLinearHead

__all__ = ['InternViTLinearHead', 'FewShotADE20KDataset', 'FewShotSegDataset',
           'FewShotSubsetMixin', 'subset_indices', 'parse_ratio']
from .batched_slide import BatchedSlideEncoderDecoder  # noqa: E402,F401
from .validate import CheckedLoadImageFromFile, ValidateSegSample  # noqa: E402,F401
