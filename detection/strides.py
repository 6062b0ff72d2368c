"""Checking that a detector's anchor and RoI strides match the feature maps its neck produces.

MMDetection takes the stride of every pyramid level on trust: the RPN's ``AnchorGenerator``
places anchors at multiples of ``strides`` and each ``SingleRoIExtractor`` pools with
``spatial_scale = 1 / featmap_strides[l]``. Nothing checks them against the maps, and a mismatch
(a patch-14 ViT gives strides 3.5, 7, 14, 28 through a simple pyramid, not 4, 8, 16, 32) still
trains, only worse. :func:`check_detector_strides` measures the strides by running the backbone
and neck once on a blank image and compares them with the configured ones.

No mmdet import: it works on any built detector with ``backbone``, ``neck`` (optional),
``rpn_head.prior_generator.strides`` and ``roi_head.{bbox,mask}_roi_extractor.featmap_strides``.
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

__all__ = ['probe_size', 'measure_strides', 'configured_strides', 'check_detector_strides',
           'strides_for_patch']


def probe_size(patch_size: int, max_stride: int = 64) -> int:
    """Smallest square input side (at least 128) that is a multiple of both the patch size and
    ``max_stride``, so that every level's size divides it exactly (e.g. 448 for patch 14)."""
    side = patch_size * max_stride // math.gcd(patch_size, max_stride)
    while side < 128:
        side *= 2
    return side


@torch.no_grad()
def measure_strides(detector: nn.Module, size: Optional[int] = None) -> List[float]:
    """Strides (input side / map side) of every level that ``detector``'s backbone and neck
    return for a blank ``size x size`` image (default :func:`probe_size` of the backbone's
    ``patch_size``). The detector's train/eval mode is restored afterwards."""
    backbone = detector.backbone
    if size is None:
        size = probe_size(int(getattr(backbone, 'patch_size', 32)))
    param = next(detector.parameters())
    x = torch.zeros(1, 3, size, size, device=param.device)
    was_training = detector.training
    detector.eval()
    try:
        feats = backbone(x)
        neck = getattr(detector, 'neck', None)
        if neck is not None:
            feats = neck(feats)
    finally:
        detector.train(was_training)
    strides = []
    for f in feats:
        sh, sw = size / f.shape[-2], size / f.shape[-1]
        if not math.isclose(sh, sw):
            raise ValueError(f'level of shape {tuple(f.shape)} has different strides in height '
                             f'({sh}) and width ({sw}) for a square {size} input')
        strides.append(sh)
    return strides


def _pair_stride(s) -> float:
    if isinstance(s, (tuple, list)):
        if not math.isclose(float(s[0]), float(s[1])):
            raise ValueError(f'non-square stride {s} is not supported by this check')
        s = s[0]
    return float(s)


def configured_strides(detector: nn.Module) -> Dict[str, List[float]]:
    """The strides the detector's heads assume, by component: ``'rpn_anchors'``,
    ``'bbox_roi_extractor'``, ``'mask_roi_extractor'`` (the ones that exist)."""
    out: Dict[str, List[float]] = {}
    rpn = getattr(detector, 'rpn_head', None)
    prior_generator = getattr(rpn, 'prior_generator', None)
    if prior_generator is not None:
        out['rpn_anchors'] = [_pair_stride(s) for s in prior_generator.strides]
    roi_head = getattr(detector, 'roi_head', None)
    for name in ('bbox_roi_extractor', 'mask_roi_extractor'):
        extractor = getattr(roi_head, name, None)
        if extractor is not None:
            out[name] = [float(s) for s in extractor.featmap_strides]
    return out


def check_detector_strides(detector: nn.Module, size: Optional[int] = None,
                           rel_tol: float = 1e-6) -> List[float]:
    """Raise ``ValueError`` if any configured anchor or RoI stride differs from the measured
    stride of its level (RoI extractors use the first ``len(featmap_strides)`` levels, the RPN
    one level per stride). Returns the measured strides.
    """
    measured = measure_strides(detector, size)
    problems: List[str] = []
    for name, strides in configured_strides(detector).items():
        if len(strides) > len(measured):
            problems.append(f'{name} has {len(strides)} strides {strides} but the neck returns '
                            f'{len(measured)} levels')
            continue
        bad: List[Tuple[int, float, float]] = [
            (i, s, m) for i, (s, m) in enumerate(zip(strides, measured))
            if not math.isclose(s, m, rel_tol=rel_tol)]
        if bad:
            problems.append(f'{name} strides {strides} do not match the measured level strides '
                            f'{measured[:len(strides)]} (levels ' +
                            ', '.join(f'{i}: {s} vs {m}' for i, s, m in bad) + ')')
    if problems:
        raise ValueError('detector stride mismatch: ' + '; '.join(problems))
    return measured


def strides_for_patch(patch_size: float, rescales: Sequence[float] = (4, 2, 1, 0.5),
                      extra_levels: int = 1) -> List[float]:
    """Strides of a simple pyramid over a patch-``patch_size`` ViT plus ``extra_levels``
    max-pooled levels (FPN's P6): ``[14 / 4, 14 / 2, 14, 28, 56]`` for patch 14."""
    strides = [patch_size / r for r in rescales]
    for _ in range(extra_levels):
        strides.append(strides[-1] * 2)
    return strides
