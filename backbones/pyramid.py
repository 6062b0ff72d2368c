"""Simple feature pyramid for plain (single-scale) ViT backbones, as in ViTDet / BEiT.

A plain ViT returns maps on one grid (stride = its patch size). This neck turns them into a
pyramid by rescaling each map by a power of two: transposed convolutions to upsample, identity,
max pooling to downsample. Nothing here assumes a patch size: scales are relative to the token
grid, so a patch-14 InternViT gives strides 3.5, 7, 14, 28 and a patch-16 ViT 4, 8, 16, 32.

Registered in mmengine's root ``MODELS`` registry (no mmseg/mmdet import).
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmengine.registry import MODELS

NORM_TYPES = ('BN', 'SyncBN', 'LN', 'GN')


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW map, computed in float32 (as the
    InternVL reference's channels-first LayerNorm), returned in the input dtype.

    It normalises along dim 1 directly instead of permuting to channels-last and back: that
    permutation leaves channels-last strides on the output and on every convolution after it,
    and mmcv's ``RoIAlign`` reads its input as contiguous NCHW memory without checking, so the
    box and mask heads would pool scrambled features.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.normalized_shape[0]:
            raise ValueError(f'LayerNorm2d({self.normalized_shape[0]}) expects (B, '
                             f'{self.normalized_shape[0]}, H, W), got {tuple(x.shape)}')
        xf = x.float()
        mean = xf.mean(1, keepdim=True)
        var = (xf - mean).pow(2).mean(1, keepdim=True)
        y = (xf - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight.float()[:, None, None]
        if self.bias is not None:
            y = y + self.bias.float()[:, None, None]
        return y.to(x.dtype)


def build_norm_2d(norm_cfg: Optional[dict], num_channels: int) -> nn.Module:
    """A norm layer for NCHW maps from an mmcv-style ``norm_cfg``.

    Args:
        norm_cfg (dict, optional): ``dict(type=T, **kwargs)`` with T one of ``'BN'``
            (``nn.BatchNorm2d``), ``'SyncBN'`` (``nn.SyncBatchNorm``; MMEngine's runner turns it
            back into BN when training is not distributed), ``'LN'`` (LayerNorm over channels) or
            ``'GN'`` (``nn.GroupNorm``; needs ``num_groups``). ``requires_grad=False`` freezes
            the affine parameters. ``None`` gives ``nn.Identity``.
        num_channels (int): Channels of the map.
    """
    if norm_cfg is None:
        return nn.Identity()
    cfg = dict(norm_cfg)
    norm_type = cfg.pop('type', None)
    requires_grad = cfg.pop('requires_grad', True)
    if norm_type == 'BN':
        layer = nn.BatchNorm2d(num_channels, **cfg)
    elif norm_type == 'SyncBN':
        layer = nn.SyncBatchNorm(num_channels, **cfg)
    elif norm_type == 'LN':
        cfg.setdefault('eps', 1e-6)
        layer = LayerNorm2d(num_channels, **cfg)
    elif norm_type == 'GN':
        if 'num_groups' not in cfg:
            raise ValueError("norm_cfg type='GN' needs num_groups")
        layer = nn.GroupNorm(num_channels=num_channels, **cfg)
    else:
        raise ValueError(f'norm_cfg type must be one of {NORM_TYPES}, got {norm_type!r}')
    for p in layer.parameters():
        p.requires_grad = requires_grad
    return layer


def _log2_scale(scale: float) -> int:
    k = math.log2(scale) if scale > 0 else float('nan')
    if not math.isfinite(k) or abs(k - round(k)) > 1e-9:
        raise ValueError(f'rescales entries must be powers of two (e.g. 4, 2, 1, 0.5), '
                         f'got {scale}')
    return int(round(k))


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """Rescale same-width ViT maps into a feature pyramid.

    For each entry ``s`` of ``rescales`` (a power of two) the matching input map is

    * ``s > 1``: upsampled by ``log2(s)`` ``ConvTranspose2d(k=2, s=2)`` layers with a norm and a
      GELU between consecutive ones (``s=4``: deconv, norm, GELU, deconv; ``s=2``: one deconv),
    * ``s == 1``: passed through unchanged,
    * ``s < 1``: max-pooled with kernel and stride ``1/s`` (floor rounding, as ViTDet).

    Then, if ``out_channels`` differs from ``in_channels``, a 1x1 conv (no bias) and a norm
    project every level to ``out_channels``.

    Args:
        in_channels (int): Channels of every input map (the ViT width).
        out_channels (int, optional): Channels of every output map. Defaults to ``in_channels``
            (no projection).
        rescales (Sequence[float]): Scale factor of each output relative to the token grid.
            Defaults to ``(4, 2, 1, 0.5)``.
        norm_cfg (dict, optional): Norm between the two deconvs of a 4x level and after the
            projection; see :func:`build_norm_2d`. Defaults to ``dict(type='BN')``.
        init_cfg (dict | list[dict], optional): MMEngine initialisation config.

    Forward:
        inputs (Sequence[Tensor]): ``len(rescales)`` maps, or a single map used for every
            level, each (B, in_channels, h, w).
        Returns a tuple of ``len(rescales)`` maps; level ``i`` is
        (B, out_channels, h * rescales[i], w * rescales[i]) (floor for downsampling).
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: Optional[int] = None,
                 rescales: Sequence[float] = (4, 2, 1, 0.5),
                 norm_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if norm_cfg is None:
            norm_cfg = dict(type='BN')
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.rescales = tuple(float(s) for s in rescales)
        if not self.rescales:
            raise ValueError('rescales must not be empty')
        self.stages = nn.ModuleList([self._make_stage(_log2_scale(s), in_channels, norm_cfg)
                                     for s in self.rescales])
        if self.out_channels != in_channels:
            self.projections = nn.ModuleList([
                nn.Sequential(nn.Conv2d(in_channels, self.out_channels, 1, bias=False),
                              build_norm_2d(norm_cfg, self.out_channels))
                for _ in self.rescales
            ])
        else:
            self.projections = None

    def init_weights(self) -> None:
        """Without an ``init_cfg``: every (transposed) convolution N(0, sqrt(2 / fan_out)) with
        fan_out = k_h * k_w * out_channels / groups and bias 0, as the InternVL reference
        initialises its pyramid (the MSRA fill ViTDet uses too); norms at ones / zeros."""
        super().init_weights()
        if self.init_cfg is not None:
            return
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @staticmethod
    def _make_stage(k: int, channels: int, norm_cfg: dict) -> nn.Module:
        if k == 0:
            return nn.Identity()
        if k < 0:
            return nn.MaxPool2d(kernel_size=2 ** -k, stride=2 ** -k)
        layers: List[nn.Module] = []
        for i in range(k):
            if i:
                layers += [build_norm_2d(norm_cfg, channels), nn.GELU()]
            layers.append(nn.ConvTranspose2d(channels, channels, kernel_size=2, stride=2))
        return nn.Sequential(*layers)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        if isinstance(inputs, torch.Tensor):
            inputs = (inputs, )
        inputs = list(inputs)
        if len(inputs) == 1:
            inputs = inputs * len(self.rescales)
        if len(inputs) != len(self.rescales):
            raise ValueError(f'SimpleFeaturePyramid got {len(inputs)} maps for '
                             f'{len(self.rescales)} rescales; give one map or one per level')
        outs = []
        for i, (x, stage) in enumerate(zip(inputs, self.stages)):
            if x.dim() != 4 or x.shape[1] != self.in_channels:
                raise ValueError(f'SimpleFeaturePyramid input {i} has shape {tuple(x.shape)}; '
                                 f'expected (B, {self.in_channels}, H, W)')
            x = stage(x)
            if self.projections is not None:
                x = self.projections[i](x)
            outs.append(x)
        return tuple(outs)
