"""ViT-Adapter for InternViT (Chen et al., "Vision Transformer Adapter for Dense Predictions"),
computing by default what InternVL-MMDetSeg's ``InternViTAdapter`` computes.

A convolutional spatial prior module (SPM) gives features at strides 4, 8, 16 and 32 of the
input. Before each group of ViT blocks an *injector* lets the ViT tokens attend to the stride 8,
16 and 32 levels (multi-scale deformable attention, scaled by a learnable ``gamma`` that starts
at ``init_values``); after the group an *extractor* lets the SPM tokens attend back to the ViT
tokens, followed by a ConvFFN with a depthwise convolution on each level. The output is the SPM
pyramid (the stride-8 level upsampled into the stride-4 one) plus the ViT tokens resized to
each level, through a norm per level.

Defaults (InternVL's adapter), each with the original ViT-Adapter behaviour as an option:

* no cls token: the ViT blocks see the patch tokens only (``with_cls_token=True``: the cls token
  is prepended to each group of blocks and skips the injector and extractor);
* the *final* ViT output is added to all four levels, bilinearly resized x4, x2, x1, x0.5
  (``vit_feature_source='interactions'``: interaction ``i``'s output to level ``i``);
* the SPM norms and the four output norms are LayerNorms over channels (eps 1e-6, computed in
  float32; ``norm_cfg=dict(type='SyncBN')`` for batch norms);
* the injector / extractor LayerNorms have eps 1e-5, ``nn.LayerNorm``'s default, which is what
  the InternVL adapter passes (``interaction_norm_eps=1e-6``: the original ViT-Adapter);
* (in :class:`~backbones.intern_vit.InternViT`) ``pos_embed`` is held at the crop grid and
  resampled once, bicubically, from the checkpoint's grid on load, and a 14 x 14 patch kernel
  meeting a 16 px stem is resized by plain bicubic interpolation (``patch_embed_resize``).

Nothing assumes a patch size or an input size (InternVL's adapter needs inputs of exactly
``img_size``, a multiple of 32, where ours computes the same function):

* the ViT keeps its own token grid (``ceil(H / patch)`` x ``ceil(W / patch)`` at stride
  ``patch``); it is never resized inside the interactions, so a frozen ViT sees exactly the
  tokens it was trained on. Deformable attention works in normalised coordinates, and
  :func:`deform_inputs` expresses every query's position in the frame of each level it attends
  to (level ``l`` of ``n_l`` cells at stride ``s_l`` spans ``n_l * s_l`` pixels, which differs
  between levels when the input is not a multiple of every stride);
* the SPM levels have ``ceil(H / s)`` x ``ceil(W / s)`` cells (3x3 stride-2 convolutions and
  max-pooling with padding 1), and the outputs exactly those sizes;
* where the ViT maps meet the SPM maps (``add_vit_feature``) they are resampled from stride
  ``patch`` to stride ``s`` with the pixel frames aligned (``scale_factor = patch / s``: 4, 2,
  1 and 0.5 at patch 16, as in InternVL).

The frozen-ViT recipe (``frozen=True``) freezes the InternViT parameters only: the adapter
stays trainable and in train mode, and with ``frozen_dtype`` only the ViT weights are cast.
"""
from __future__ import annotations

import math
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.registry import MODELS
from timm.layers import DropPath
from torch.utils.checkpoint import checkpoint

from .intern_vit import InternViT, log
from .ms_deform_attn import MSDeformAttn
from .pyramid import LayerNorm2d, build_norm_2d

#: Strides of the spatial prior module's levels that take part in the interactions.
SPM_STRIDES = (8, 16, 32)
#: Strides of the four output maps.
OUT_STRIDES = (4, 8, 16, 32)
#: Top-level submodules / parameters that belong to the adapter (trainable with a frozen ViT).
ADAPTER_MODULES = ('level_embed', 'spm', 'interactions', 'up', 'norm1', 'norm2', 'norm3',
                   'norm4')

#: Where the ViT features added to the pyramid come from (``vit_feature_source``).
VIT_FEATURE_SOURCES = ('final', 'interactions')
#: Default SPM / output norm: LayerNorm over channels, eps 1e-6, computed in float32.
DEFAULT_NORM_CFG = dict(type='LN', eps=1e-6)

Shape = Tuple[int, int]
DeformInputs = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# --------------------------------------------------------------------------- geometry
def _cells(size: int, stride: int) -> int:
    return -(-size // stride)  # ceil: the size of a padded conv / patch grid at that stride


def _centers(shape: Shape, stride: int, device=None) -> torch.Tensor:
    """Pixel coordinates (h*w, 2) as (x, y) of the centres of a grid's cells, row-major."""
    ys = (torch.arange(shape[0], dtype=torch.float32, device=device) + 0.5) * stride
    xs = (torch.arange(shape[1], dtype=torch.float32, device=device) + 0.5) * stride
    gy, gx = torch.meshgrid(ys, xs, indexing='ij')
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], -1)


def get_reference_points(query_shapes: Sequence[Shape], query_strides: Sequence[int],
                         key_shapes: Sequence[Shape], key_strides: Sequence[int],
                         device=None) -> torch.Tensor:
    """Reference points (1, sum h*w, len(key_shapes), 2): each query cell's centre, as a
    normalised ``(x, y)`` in the frame of each key level (``n_l * s_l`` pixels wide/high)."""
    centers = torch.cat([_centers(s, st, device) for s, st in zip(query_shapes, query_strides)])
    extents = torch.tensor([[w * st, h * st] for (h, w), st in zip(key_shapes, key_strides)],
                           dtype=torch.float32, device=device)
    return (centers[:, None, :] / extents[None]).unsqueeze(0)


def _deform_tuple(ref: torch.Tensor, key_shapes: Sequence[Shape], device) -> DeformInputs:
    shapes = torch.tensor(key_shapes, dtype=torch.long, device=device)
    sizes = shapes.prod(1)
    start = torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])
    return ref, shapes, start


def deform_inputs(x: torch.Tensor, patch_size: int,
                  spm_strides: Sequence[int] = SPM_STRIDES) -> Tuple[DeformInputs, DeformInputs]:
    """Reference points and level layouts of the injector and the extractor.

    Args:
        x (Tensor): The input image batch (B, C, H, W); only its size and device are used.
        patch_size (int): The ViT patch size: its token grid is ``ceil(H / p)`` x
            ``ceil(W / p)`` at stride ``p``.
        spm_strides (Sequence[int]): Strides of the SPM levels used in the interactions.

    Returns:
        ``(injector, extractor)``, each ``(reference_points, spatial_shapes,
        level_start_index)``. Injector: queries are the ViT tokens, keys the SPM levels
        (reference points (1, h*w, len(spm_strides), 2)). Extractor: queries are the SPM tokens
        of all levels, keys the ViT grid (reference points (1, sum h_l*w_l, 1, 2)).
    """
    H, W = x.shape[-2:]
    vit_shape = (_cells(H, patch_size), _cells(W, patch_size))
    spm_shapes = [(_cells(H, s), _cells(W, s)) for s in spm_strides]
    ref1 = get_reference_points([vit_shape], [patch_size], spm_shapes, spm_strides, x.device)
    ref2 = get_reference_points(spm_shapes, spm_strides, [vit_shape], [patch_size], x.device)
    return (_deform_tuple(ref1, spm_shapes, x.device),
            _deform_tuple(ref2, [vit_shape], x.device))


def resize_to_grid(x: torch.Tensor, src_stride: int, dst_stride: int,
                   dst_shape: Shape) -> torch.Tensor:
    """Bilinearly resample a (B, C, h, w) map at ``src_stride`` to ``dst_shape`` cells at
    ``dst_stride`` with both grids anchored at the image's top-left corner (no drift when the
    two grids cover slightly different padded extents); edge cells are replicated if needed."""
    if src_stride == dst_stride and tuple(x.shape[-2:]) == tuple(dst_shape):
        return x  # bilinear at scale 1 is the identity
    scale = src_stride / dst_stride
    x = F.interpolate(x, scale_factor=(scale, scale), mode='bilinear', align_corners=False,
                      recompute_scale_factor=False)
    pad_h, pad_w = dst_shape[0] - x.shape[-2], dst_shape[1] - x.shape[-1]
    if pad_h > 0 or pad_w > 0:
        x = F.pad(x, (0, max(pad_w, 0), 0, max(pad_h, 0)), mode='replicate')
    return x[..., :dst_shape[0], :dst_shape[1]]


# --------------------------------------------------------------------------- building blocks
def build_norm2d(norm_cfg: Optional[dict], channels: int) -> nn.Module:
    """SPM / output norm: ``pyramid.build_norm_2d`` with :data:`DEFAULT_NORM_CFG` (InternVL's
    channels-first LayerNorm, eps 1e-6, float32) when ``norm_cfg`` is None. ``SyncBN`` is
    reverted to BN by MMEngine's runner when not distributed."""
    return build_norm_2d(norm_cfg if norm_cfg is not None else DEFAULT_NORM_CFG, channels)


def _conv_norm_relu(cin: int, cout: int, stride: int, norm_cfg: Optional[dict]) -> List[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride, 1, bias=False), build_norm2d(norm_cfg, cout),
            nn.ReLU(inplace=True)]


class SpatialPriorModule(nn.Module):
    """Convolutional stem giving ``embed_dims``-wide maps at strides 4, 8, 16 and 32.

    Args:
        inplanes (int): Width of the stride-4 stem (then 2x, 4x, 4x).
        embed_dims (int): Output width (the ViT's).
        in_channels (int): Image channels.
        norm_cfg (dict, optional): See :func:`build_norm2d` (default channel LayerNorm).
        with_cp (bool): Activation checkpointing when gradients are needed.

    Forward: (B, in_channels, H, W) -> 4 maps (B, embed_dims, ceil(H/s), ceil(W/s)).
    """

    def __init__(self, inplanes: int = 64, embed_dims: int = 384, in_channels: int = 3,
                 norm_cfg: Optional[dict] = None, with_cp: bool = False) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.stem = nn.Sequential(
            *_conv_norm_relu(in_channels, inplanes, 2, norm_cfg),
            *_conv_norm_relu(inplanes, inplanes, 1, norm_cfg),
            *_conv_norm_relu(inplanes, inplanes, 1, norm_cfg),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.conv2 = nn.Sequential(*_conv_norm_relu(inplanes, 2 * inplanes, 2, norm_cfg))
        self.conv3 = nn.Sequential(*_conv_norm_relu(2 * inplanes, 4 * inplanes, 2, norm_cfg))
        self.conv4 = nn.Sequential(*_conv_norm_relu(4 * inplanes, 4 * inplanes, 2, norm_cfg))
        self.fc1 = nn.Conv2d(inplanes, embed_dims, 1)
        self.fc2 = nn.Conv2d(2 * inplanes, embed_dims, 1)
        self.fc3 = nn.Conv2d(4 * inplanes, embed_dims, 1)
        self.fc4 = nn.Conv2d(4 * inplanes, embed_dims, 1)

    def _forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        c1 = self.stem(x)
        c2 = self.conv2(c1)
        c3 = self.conv3(c2)
        c4 = self.conv4(c3)
        return self.fc1(c1), self.fc2(c2), self.fc3(c3), self.fc4(c4)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.with_cp and torch.is_grad_enabled() and self.training:
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)


class DWConv(nn.Module):
    """3x3 depthwise conv applied to each level of a flattened multi-level token sequence."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, shapes: Sequence[Shape]) -> torch.Tensor:
        """x: (B, sum h*w, C) with levels of ``shapes`` one after the other -> same shape."""
        B, N, C = x.shape
        sizes = [h * w for h, w in shapes]
        if sum(sizes) != N:
            raise ValueError(f'DWConv: level shapes {list(shapes)} hold {sum(sizes)} tokens, '
                             f'got {N}')
        outs = []
        for tokens, (h, w) in zip(x.split(sizes, dim=1), shapes):
            fmap = tokens.transpose(1, 2).reshape(B, C, h, w)
            outs.append(self.dwconv(fmap).flatten(2).transpose(1, 2))
        return torch.cat(outs, dim=1)


class ConvFFN(nn.Module):
    """Linear -> depthwise 3x3 conv (per level) -> GELU -> Linear."""

    def __init__(self, in_features: int, hidden_features: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.dwconv = DWConv(hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, in_features)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, shapes: Sequence[Shape]) -> torch.Tensor:
        x = self.act(self.dwconv(self.fc1(x), shapes))
        return self.drop(self.fc2(self.drop(x)))


#: eps of the injector / extractor LayerNorms: ``nn.LayerNorm``'s default, which InternVL's
#: adapter passes (the original ViT-Adapter uses 1e-6).
INTERACTION_NORM_EPS = 1e-5


def _maybe_checkpoint(fn: Callable, with_cp: bool, *args):
    if with_cp and torch.is_grad_enabled():
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


class Injector(nn.Module):
    """ViT tokens attend to the SPM levels: ``x + gamma * attn(norm(x), norm(c))``.

    Args:
        dim (int): Token width.
        num_heads (int): Deformable-attention heads.
        n_points (int): Sampling points per head and level.
        n_levels (int): SPM levels attended to.
        deform_ratio (float): Value width relative to ``dim``.
        init_values (float): Initial ``gamma`` (0: the ViT starts unchanged).
        with_cp (bool): Activation checkpointing when gradients are needed.
        attn_impl (str): Deformable-attention implementation (see ``ms_deform_attn``).
        norm_eps (float): eps of the query / feature LayerNorms.
    """

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4, n_levels: int = 3,
                 deform_ratio: float = 1.0, init_values: float = 0.0, with_cp: bool = False,
                 attn_impl: str = 'auto', norm_eps: float = INTERACTION_NORM_EPS) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.feat_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSDeformAttn(d_model=dim, n_levels=n_levels, n_heads=num_heads,
                                 n_points=n_points, ratio=deform_ratio, impl=attn_impl)
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, query: torch.Tensor, feat: torch.Tensor,
                inputs: DeformInputs) -> torch.Tensor:
        ref, shapes, start = inputs

        def inner(query, feat):
            attn = self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes, start)
            return query + self.gamma * attn

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class Extractor(nn.Module):
    """SPM tokens attend to the ViT tokens, then a ConvFFN over the SPM levels.

    Args:
        dim, num_heads, n_points, deform_ratio, with_cp, attn_impl, norm_eps: as in
            :class:`Injector` (``norm_eps`` also for the ConvFFN's norm).
        n_levels (int): Key levels (1: the ViT grid).
        with_cffn (bool): Add the ConvFFN.
        cffn_ratio (float): ConvFFN hidden width relative to ``dim``.
        drop (float): Dropout in the ConvFFN.
        drop_path (float): Stochastic depth on the ConvFFN branch.
    """

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4, n_levels: int = 1,
                 deform_ratio: float = 1.0, with_cffn: bool = True, cffn_ratio: float = 0.25,
                 drop: float = 0.0, drop_path: float = 0.0, with_cp: bool = False,
                 attn_impl: str = 'auto', norm_eps: float = INTERACTION_NORM_EPS) -> None:
        super().__init__()
        self.with_cp = with_cp
        self.query_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.feat_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSDeformAttn(d_model=dim, n_levels=n_levels, n_heads=num_heads,
                                 n_points=n_points, ratio=deform_ratio, impl=attn_impl)
        self.with_cffn = with_cffn
        if with_cffn:
            self.ffn = ConvFFN(dim, int(dim * cffn_ratio), drop=drop)
            self.ffn_norm = nn.LayerNorm(dim, eps=norm_eps)
            self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, query: torch.Tensor, feat: torch.Tensor, inputs: DeformInputs,
                query_shapes: Sequence[Shape]) -> torch.Tensor:
        ref, shapes, start = inputs

        def inner(query, feat):
            query = query + self.attn(self.query_norm(query), ref, self.feat_norm(feat), shapes,
                                      start)
            if self.with_cffn:
                query = query + self.drop_path(self.ffn(self.ffn_norm(query), query_shapes))
            return query

        return _maybe_checkpoint(inner, self.with_cp, query, feat)


class InteractionBlock(nn.Module):
    """Injector -> ViT blocks (patch tokens, or a cls token prepended) -> extractor(s).

    Args:
        dim, num_heads, n_points, deform_ratio, init_values, with_cffn, cffn_ratio, drop,
        drop_path, with_cp, attn_impl, norm_eps: see :class:`Injector` / :class:`Extractor`.
        extra_extractor (bool): Two more extractors after the first (the last interaction).
    """

    def __init__(self, dim: int, num_heads: int = 6, n_points: int = 4,
                 deform_ratio: float = 1.0, init_values: float = 0.0, with_cffn: bool = True,
                 cffn_ratio: float = 0.25, drop: float = 0.0, drop_path: float = 0.0,
                 extra_extractor: bool = False, with_cp: bool = False,
                 attn_impl: str = 'auto', norm_eps: float = INTERACTION_NORM_EPS) -> None:
        super().__init__()
        self.injector = Injector(dim, num_heads, n_points, n_levels=len(SPM_STRIDES),
                                 deform_ratio=deform_ratio, init_values=init_values,
                                 with_cp=with_cp, attn_impl=attn_impl, norm_eps=norm_eps)
        ext = dict(dim=dim, num_heads=num_heads, n_points=n_points, n_levels=1,
                   deform_ratio=deform_ratio, with_cffn=with_cffn, cffn_ratio=cffn_ratio,
                   drop=drop, drop_path=drop_path, with_cp=with_cp, attn_impl=attn_impl,
                   norm_eps=norm_eps)
        self.extractor = Extractor(**ext)
        self.extra_extractors = nn.ModuleList(
            [Extractor(**ext) for _ in range(2)]) if extra_extractor else None

    def forward(self, x: torch.Tensor, c: torch.Tensor, cls: Optional[torch.Tensor],
                run_blocks: Callable[[torch.Tensor], torch.Tensor], inj: DeformInputs,
                ext: DeformInputs, c_shapes: Sequence[Shape]
                ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """x: (B, h*w, C) ViT patch tokens, in the adapter's dtype; c: (B, sum h_l*w_l, C) SPM
        tokens; cls: (B, 1, C) or None (no cls token: the blocks see the patch tokens only);
        ``run_blocks`` maps (B, prefix + h*w, C) through the ViT blocks of this interaction.
        Returns the new (x, c, cls)."""
        x = self.injector(x, c, inj)
        if cls is None:
            x = run_blocks(x).to(c.dtype)
        else:
            tokens = run_blocks(torch.cat([cls.to(x.dtype), x], dim=1))
            cls, x = tokens[:, :1], tokens[:, 1:].to(c.dtype)
        c = self.extractor(c, x, ext, c_shapes)
        if self.extra_extractors is not None:
            for extractor in self.extra_extractors:
                c = extractor(c, x, ext, c_shapes)
        return x, c, cls


def _output_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A final norm with a float32 result; a channel LayerNorm gets the float32 map (as InternVL
    calls ``norm(c.float())``), other norms keep the map's dtype."""
    if isinstance(norm, LayerNorm2d):
        return norm(x.float())
    return norm(x).float()


# --------------------------------------------------------------------------- the backbone
def _even_split(num_layers: int, parts: int = 4) -> List[List[int]]:
    bounds = [round(num_layers * i / parts) for i in range(parts + 1)]
    return [[bounds[i], bounds[i + 1] - 1] for i in range(parts)]


@MODELS.register_module()
class InternViTAdapter(InternViT):
    """InternViT with a ViT-Adapter: 4 maps at strides 4, 8, 16, 32 for any patch/input size.

    The defaults compute what InternVL-MMDetSeg's ``InternViTAdapter`` computes (see the module
    docstring for each difference from the original ViT-Adapter and the option that restores
    it).

    Args:
        arch, img_size, patch_size, pretrain_size, drop_path_rate, attn_impl, frozen,
        frozen_dtype, norm_eps, pos_embed_antialias, window_size, global_indices,
        window_pad_mask, patch_embed_resize, in_channels, init_cfg: as in :class:`InternViT`
            (window attention in the blocks outside ``global_indices``). ``pos_embed`` is held
            at the ``img_size // patch_size`` grid. ``frozen`` freezes the ViT only;
            ``init_cfg`` loads ViT weights (strict about every ViT key, the adapter's
            parameters are initialised, not loaded).
        with_cls_token (bool): False (default, InternVL's adapter): the ViT blocks see the
            patch tokens only, there is no ``cls_token`` parameter and a checkpoint's is dropped.
            True: the cls token is prepended to each group of blocks (original ViT-Adapter).
        out_indices: Not used (the outputs follow ``interaction_indexes``); must stay None.
        with_cp (bool): Activation checkpointing of the ViT blocks (also when the ViT is frozen
            and only the adapter needs their gradients) and of the adapter modules.
        interaction_indexes (Sequence[Sequence[int]], optional): Four ``[first, last]`` block
            ranges, contiguous from block 0; default: the depth split in four.
        conv_inplane (int): Width of the SPM stem.
        n_points (int): Deformable-attention sampling points per head and level.
        deform_num_heads (int, optional): Deformable-attention heads (default: the ViT's).
        deform_ratio (float): Value width of the deformable attention relative to embed_dims.
        init_values (float): Initial injector ``gamma``.
        with_cffn (bool): ConvFFN in the extractors.
        cffn_ratio (float): ConvFFN hidden width relative to embed_dims.
        add_vit_feature (bool): Add the resized ViT tokens to the SPM maps.
        vit_feature_source (str): Which ViT tokens: ``'final'`` (default, InternVL: the output
            of the last interaction, to all four levels) or ``'interactions'`` (original
            ViT-Adapter: interaction ``i``'s output to level ``i``).
        use_extra_extractor (bool): Two extra extractors in the last interaction.
        norm_cfg (dict, optional): SPM and output norms, ``dict(type='BN'|'SyncBN'|'GN'|'LN')``
            as in ``pyramid.build_norm_2d``; default :data:`DEFAULT_NORM_CFG` (LayerNorm over
            channels, eps 1e-6, computed in float32, as InternVL).
        interaction_norm_eps (float): eps of the injector / extractor LayerNorms (1e-5 as
            InternVL; 1e-6 in the original ViT-Adapter).
        deform_attn_impl (str): ``'auto'`` | ``'pytorch'`` | ``'mmcv'``.

    Forward:
        x (Tensor): (B, in_channels, H, W), any H, W.
        Returns 4 float32 maps (B, embed_dims, ceil(H/s), ceil(W/s)) for s = 4, 8, 16, 32.
    """

    def __init__(self,
                 arch: Union[str, dict] = '6b',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 14,
                 pretrain_size: Optional[int] = None,
                 out_indices: Optional[Union[int, Sequence[int]]] = None,
                 drop_path_rate: float = 0.0,
                 with_cp: bool = False,
                 attn_impl: str = 'auto',
                 frozen: bool = False,
                 frozen_dtype: Optional[str] = None,
                 norm_eps: float = 1e-6,
                 in_channels: int = 3,
                 init_cfg: Optional[dict] = None,
                 window_size: Optional[int] = None,
                 global_indices: Sequence[int] = (),
                 window_pad_mask: bool = True,
                 pos_embed_antialias: bool = False,
                 patch_embed_resize: str = 'bicubic',
                 with_cls_token: bool = False,
                 interaction_indexes: Optional[Sequence[Sequence[int]]] = None,
                 conv_inplane: int = 64,
                 n_points: int = 4,
                 deform_num_heads: Optional[int] = None,
                 deform_ratio: float = 1.0,
                 init_values: float = 0.0,
                 with_cffn: bool = True,
                 cffn_ratio: float = 0.25,
                 add_vit_feature: bool = True,
                 vit_feature_source: str = 'final',
                 use_extra_extractor: bool = True,
                 norm_cfg: Optional[dict] = None,
                 interaction_norm_eps: float = INTERACTION_NORM_EPS,
                 deform_attn_impl: str = 'auto') -> None:
        if out_indices is not None:
            raise ValueError('InternViTAdapter returns the 4 adapter maps (strides 4, 8, 16, 32) '
                             'after the interactions set by interaction_indexes; out_indices '
                             f'is not used and must be left unset, got {out_indices!r}')
        if vit_feature_source not in VIT_FEATURE_SOURCES:
            raise ValueError(f'vit_feature_source must be one of {VIT_FEATURE_SOURCES}, got '
                             f'{vit_feature_source!r}')
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size,
                         pretrain_size=pretrain_size, out_indices=-1,
                         drop_path_rate=drop_path_rate, with_cp=with_cp, attn_impl=attn_impl,
                         frozen=frozen, frozen_dtype=frozen_dtype, norm_eps=norm_eps,
                         in_channels=in_channels, init_cfg=init_cfg, window_size=window_size,
                         global_indices=global_indices, window_pad_mask=window_pad_mask,
                         pos_embed_antialias=pos_embed_antialias,
                         patch_embed_resize=patch_embed_resize, with_cls_token=with_cls_token)
        dim = self.embed_dims
        if interaction_indexes is None:
            interaction_indexes = _even_split(self.num_layers)
        self.interaction_indexes = self._check_indexes(interaction_indexes)
        if deform_num_heads is None:
            deform_num_heads = self.arch_settings['num_heads']
        self.deform_num_heads = deform_num_heads
        self.add_vit_feature = add_vit_feature
        self.vit_feature_source = vit_feature_source

        self.level_embed = nn.Parameter(torch.zeros(len(SPM_STRIDES), dim))
        self.spm = SpatialPriorModule(conv_inplane, dim, in_channels, norm_cfg, with_cp)
        self.interactions = nn.ModuleList([
            InteractionBlock(dim, deform_num_heads, n_points, deform_ratio=deform_ratio,
                             init_values=init_values, with_cffn=with_cffn,
                             cffn_ratio=cffn_ratio, drop_path=drop_path_rate,
                             extra_extractor=use_extra_extractor and i == 3, with_cp=with_cp,
                             attn_impl=deform_attn_impl, norm_eps=interaction_norm_eps)
            for i in range(4)])
        self.up = nn.ConvTranspose2d(dim, dim, 2, 2)
        self.norm1 = build_norm2d(norm_cfg, dim)
        self.norm2 = build_norm2d(norm_cfg, dim)
        self.norm3 = build_norm2d(norm_cfg, dim)
        self.norm4 = build_norm2d(norm_cfg, dim)
        self.init_adapter_weights()

    def _check_indexes(self, indexes) -> Tuple[Tuple[int, int], ...]:
        out = tuple(tuple(int(i) for i in pair) for pair in indexes)
        bad = len(out) != 4 or any(len(p) != 2 for p in out)
        expected_start = 0
        for first, last in ([] if bad else out):
            if first != expected_start or last < first or last >= self.num_layers:
                bad = True
            expected_start = last + 1
        if bad:
            raise ValueError(f'interaction_indexes must be four [first, last] block ranges, '
                             f'contiguous from block 0 within {self.num_layers} blocks (e.g. '
                             f'{_even_split(self.num_layers)}), got {indexes!r}')
        return out

    # ------------------------------------------------------------------ freezing / dtypes
    @staticmethod
    def is_adapter_param(name: str) -> bool:
        """Whether a parameter/buffer name (relative to this module) belongs to the adapter."""
        return name.split('.', 1)[0] in ADAPTER_MODULES

    def adapter_modules(self) -> List[nn.Module]:
        return [self.spm, self.interactions, self.up, self.norm1, self.norm2, self.norm3,
                self.norm4]

    def train(self, mode: bool = True):
        super().train(mode)  # a frozen ViT stays in eval mode...
        if getattr(self, 'spm', None) is not None:
            for m in self.adapter_modules():  # ...but the adapter trains
                m.train(mode)
        return self

    def _apply(self, fn, *args, **kwargs):
        # InternViT keeps *all* parameters in frozen_dtype; only the ViT's are frozen here.
        out = super(InternViT, self)._apply(fn, *args, **kwargs)
        if getattr(self, 'frozen_dtype', None) is not None:
            for name, p in self.named_parameters():
                if not self.is_adapter_param(name) and p.is_floating_point() \
                        and p.dtype != self.frozen_dtype:
                    p.data = p.data.to(self.frozen_dtype)
        return out

    # ------------------------------------------------------------------ weights
    def init_adapter_weights(self) -> None:
        """ViT-Adapter's init: truncated-normal linears, fan-out normal convs, unit norms,
        Deformable-DETR init of the deformable attention, normal level embeddings."""
        for m in self.adapter_modules():
            for sub in m.modules():
                if isinstance(sub, nn.Linear):
                    nn.init.trunc_normal_(sub.weight, std=0.02)
                    if sub.bias is not None:
                        nn.init.zeros_(sub.bias)
                elif isinstance(sub, (nn.Conv2d, nn.ConvTranspose2d)):
                    k = sub.kernel_size[0] * sub.kernel_size[1]
                    fan_out = k * sub.out_channels // sub.groups
                    nn.init.normal_(sub.weight, 0, math.sqrt(2.0 / fan_out))
                    if sub.bias is not None:
                        nn.init.zeros_(sub.bias)
                elif isinstance(sub, (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)):
                    if sub.weight is not None:
                        nn.init.ones_(sub.weight)
                        nn.init.zeros_(sub.bias)
        for m in self.modules():
            if isinstance(m, MSDeformAttn):
                m.reset_parameters()
        nn.init.normal_(self.level_embed)

    def init_weights(self) -> None:
        if self._init_cfg is not None:
            self._load_vit_weights(self._init_cfg['checkpoint'],
                                   strict=self._init_cfg.get('strict', True))
        else:
            super().init_weights()  # random ViT init (also touches adapter linears: redone next)
        self.init_adapter_weights()
        self._is_init = True

    def _load_vit_weights(self, path: str, strict: bool = True) -> None:
        """Like ``checkpoint.load_pretrained``, but strict about the ViT's keys only: the
        adapter's are not expected in an InternViT checkpoint."""
        from .checkpoint import (_resample_to_model, check_state_dict, convert_to_internvit,
                                 read_state_dict)
        sd, layout, dropped = convert_to_internvit(read_state_dict(path))
        _resample_to_model(self, sd)
        model_sd = {k: v for k, v in self.state_dict().items() if not self.is_adapter_param(k)}
        check_state_dict(model_sd, sd, path, strict)
        sd = {k: v.to(model_sd[k].dtype) for k, v in sd.items() if k in model_sd}
        missing, unexpected = self.load_state_dict(sd, strict=False)
        assert not unexpected and all(self.is_adapter_param(k) for k in missing), \
            (missing, unexpected)
        log(f'loaded {len(sd)} ViT tensors from {path} (layout: {layout}'
            f'{f", dropped {len(dropped)} non-backbone keys" if dropped else ""}); '
            f'the adapter is initialised from scratch')

    # ------------------------------------------------------------------ forward
    def _run_blocks(self, first: int, last: int, hw: Tuple[int, int]
                    ) -> Callable[[torch.Tensor], torch.Tensor]:
        vit_dtype = self.patch_embed.proj.weight.dtype

        def run(x: torch.Tensor) -> torch.Tensor:
            x = x.to(vit_dtype)  # as prepare_tokens does; autocast still applies inside
            for i in range(first, last + 1):
                if self.with_cp and x.requires_grad and torch.is_grad_enabled():
                    # InternViT.run_block checkpoints only in train mode; a frozen ViT is in eval
                    # mode but still backpropagates to the injectors before it.
                    x = checkpoint(self.blocks[i], x, hw, use_reentrant=False)
                else:
                    x = self.run_block(i, x, hw)
            return x

        return run

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        B, _, H, W = x.shape
        p = self.patch_size
        inj, ext = deform_inputs(x, p)
        c_shapes = [(_cells(H, s), _cells(W, s)) for s in SPM_STRIDES]

        spm_dtype = self.spm.fc1.weight.dtype
        c1, c2, c3, c4 = self.spm(x if torch.is_autocast_enabled(x.device.type)
                                  else x.to(spm_dtype))
        got = [tuple(c.shape[-2:]) for c in (c2, c3, c4)]
        if got != c_shapes:  # the SPM's convs must give ceil(H / s) cells
            raise RuntimeError(f'SPM levels {got} differ from the expected {c_shapes}')
        c = torch.cat([ci.flatten(2).transpose(1, 2) + self.level_embed[i].to(ci.dtype)
                       for i, ci in enumerate((c2, c3, c4))], dim=1)

        tokens, (h, w) = self.prepare_tokens(x)  # no cls token unless with_cls_token
        prefix = self.num_prefix_tokens
        cls = tokens[:, :prefix] if prefix else None
        t = tokens[:, prefix:].to(c.dtype)
        per_interaction = self.add_vit_feature and self.vit_feature_source == 'interactions'
        vit_maps = []
        for layer, (first, last) in zip(self.interactions, self.interaction_indexes):
            t, c, cls = layer(t, c, cls, self._run_blocks(first, last, (h, w)), inj, ext,
                              c_shapes)
            if per_interaction:
                vit_maps.append(t.transpose(1, 2).reshape(B, self.embed_dims, h, w))
        if not per_interaction:  # the final ViT output, to every level
            vit_maps = [t.transpose(1, 2).reshape(B, self.embed_dims, h, w)] * 4

        sizes = [hh * ww for hh, ww in c_shapes]
        c2, c3, c4 = [ci.transpose(1, 2).reshape(B, self.embed_dims, *shape)
                      for ci, shape in zip(c.split(sizes, dim=1), c_shapes)]
        up = self.up(c2)  # 2 * ceil(H/8) may exceed ceil(H/4) by one cell
        c1 = c1 + up[..., :c1.shape[-2], :c1.shape[-1]]
        maps = [c1, c2, c3, c4]
        if self.add_vit_feature:
            maps = [m + resize_to_grid(v.to(m.dtype), p, s, m.shape[-2:])
                    for m, v, s in zip(maps, vit_maps, OUT_STRIDES)]
        norms = (self.norm1, self.norm2, self.norm3, self.norm4)
        return tuple(_output_norm(norm, m) for norm, m in zip(norms, maps))


__all__ = ['InternViTAdapter', 'SpatialPriorModule', 'InteractionBlock', 'Injector',
           'Extractor', 'ConvFFN', 'DWConv', 'deform_inputs', 'get_reference_points',
           'resize_to_grid', 'build_norm2d', 'SPM_STRIDES', 'OUT_STRIDES', 'DEFAULT_NORM_CFG',
           'INTERACTION_NORM_EPS', 'VIT_FEATURE_SOURCES']
