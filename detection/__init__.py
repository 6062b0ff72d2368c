"""MMDetection glue for InternViT.

Mask R-CNN on InternViT needs no new mmdet module: the backbones (``InternViT``,
``InternViTAdapter``) and the ``SimpleFeaturePyramid`` neck are registered in mmengine's root
``MODELS`` by ``backbones``, which mmdet's registry falls back to, and a list of neck configs is
built by mmengine as a ``Sequential`` (simple pyramid, then mmdet's ``FPN``). A patch-14 ViT
through a simple pyramid has strides 3.5, 7, 14, 28 (and 56 for FPN's P6); mmdet's anchor
generator and RoI extractors accept these as they are. This package registers nothing; it holds
:func:`check_detector_strides`, which measures the strides of a built detector's backbone + neck
and checks its anchor / RoI strides against them, and makes mmcv's NMS and RoIAlign take the
bf16 tensors of mixed-precision training (``detection/mixed_precision.py``, applied on import).
"""
from .mixed_precision import (install_float32_nms, install_float32_roi_align,
                              install_mixed_precision_fixes)
from .strides import (check_detector_strides, configured_strides, measure_strides, probe_size,
                      strides_for_patch)

install_mixed_precision_fixes()

__all__ = ['install_float32_nms', 'install_float32_roi_align', 'install_mixed_precision_fixes',
           'check_detector_strides', 'configured_strides', 'measure_strides', 'probe_size',
           'strides_for_patch']
