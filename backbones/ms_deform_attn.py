"""Multi-scale deformable attention (Deformable DETR) that runs on every device and dtype.

``ms_deform_attn`` samples, for every query, head, level and point, the value map of that level
bilinearly at a normalised location and sums the samples with the given attention weights.

Two implementations compute the same thing:

* ``'mmcv'`` -- mmcv's compiled ``MultiScaleDeformableAttnFunction`` (CUDA kernels for fp32 and
  fp16, forward and backward). mmcv is imported lazily, on first use, so this module and the
  backbones import without mmcv.
* ``'pytorch'`` -- ``F.grid_sample`` per level (any device: CPU, CUDA, ...; any floating dtype).
  Sampling is done in float32 for half-precision inputs (bf16 has 8 significant bits: a location
  of 0.7 in a 128-wide map would be off by half a pixel) and the result is cast back.

``impl='auto'`` picks mmcv's op for CUDA tensors in float32/float16 when it is importable and
was compiled with CUDA, and the PyTorch path otherwise (CPU, bf16, float64, no mmcv).

Location convention (mmcv's and Deformable DETR's): ``(x, y)`` in ``[0, 1]`` over the level's
width and height; pixel ``j`` of a ``w``-wide level is centred at ``(j + 0.5) / w``, i.e. the
sample is taken at pixel coordinate ``x * w - 0.5`` (``align_corners=False``) with zeros outside
the map.
"""
from __future__ import annotations

import functools
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

IMPLS = ('auto', 'pytorch', 'mmcv')
_MMCV_DTYPES = (torch.float32, torch.float16)

Shapes = Union[torch.Tensor, Sequence[Tuple[int, int]]]


@functools.lru_cache(maxsize=None)
def _load_mmcv_op() -> Tuple[Optional[type], str]:
    """(mmcv's autograd Function or None, why it is unavailable)."""
    try:
        from mmcv.ops import get_compiling_cuda_version
        from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    except (ImportError, OSError, RuntimeError) as e:  # not installed, or _ext fails to load
        return None, f'mmcv.ops cannot be imported ({type(e).__name__}: {e})'
    cuda = get_compiling_cuda_version()
    if cuda == 'not available':
        return None, 'mmcv was compiled without CUDA ops (get_compiling_cuda_version() says ' \
                     '"not available")'
    return MultiScaleDeformableAttnFunction, ''


def mmcv_op_available() -> bool:
    """Whether mmcv's compiled CUDA multi-scale deformable attention can be used."""
    return _load_mmcv_op()[0] is not None


def shapes_to_list(spatial_shapes: Shapes) -> List[Tuple[int, int]]:
    if isinstance(spatial_shapes, torch.Tensor):
        spatial_shapes = spatial_shapes.tolist()
    return [(int(h), int(w)) for h, w in spatial_shapes]


def shapes_to_tensor(spatial_shapes: Shapes, device: torch.device) -> torch.Tensor:
    if isinstance(spatial_shapes, torch.Tensor):
        return spatial_shapes.to(device=device, dtype=torch.long)
    return torch.as_tensor([list(s) for s in spatial_shapes], dtype=torch.long, device=device)


def level_start_index_from_shapes(shapes: torch.Tensor) -> torch.Tensor:
    """(L, 2) long tensor of (h, w) -> (L,) start offset of each level in the flattened value."""
    sizes = shapes.prod(1)
    return torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]])


def choose_impl(value: torch.Tensor, impl: str = 'auto') -> str:
    """The implementation ``ms_deform_attn`` uses for ``value`` under ``impl``."""
    if impl not in IMPLS:
        raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
    if impl == 'pytorch':
        return 'pytorch'
    if impl == 'mmcv':
        op, why = _load_mmcv_op()
        if op is None:
            raise RuntimeError(f"impl='mmcv' was requested but mmcv's multi-scale deformable "
                               f"attention is unavailable: {why}. Use impl='auto' or 'pytorch'.")
        if not value.is_cuda or value.dtype not in _MMCV_DTYPES:
            raise ValueError(f"impl='mmcv' needs CUDA float32/float16 tensors, got "
                             f"{value.device.type} {value.dtype}; use impl='auto' or 'pytorch'")
        return 'mmcv'
    if value.is_cuda and value.dtype in _MMCV_DTYPES and mmcv_op_available():
        return 'mmcv'
    return 'pytorch'


def _im2col_step(batch: int, limit: int = 64) -> int:
    # mmcv's kernel processes the batch in chunks that must divide it.
    return next(d for d in range(min(batch, limit), 0, -1) if batch % d == 0)


def ms_deform_attn_pytorch(value: torch.Tensor, spatial_shapes: Shapes,
                           sampling_locations: torch.Tensor,
                           attention_weights: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample`` implementation; arguments as in :func:`ms_deform_attn`."""
    B, num_value, num_heads, head_dims = value.shape
    _, num_query, _, num_levels, num_points, _ = sampling_locations.shape
    shapes = shapes_to_list(spatial_shapes)
    out_dtype = value.dtype
    dtype = torch.promote_types(value.dtype, torch.float32)  # float32, or float64 for float64
    # (B, Lv, heads, D) -> per level (B * heads, D, h, w)
    value = value.to(dtype).permute(0, 2, 3, 1).flatten(0, 1)
    # grid_sample wants [-1, 1]; (B, Lq, heads, L, P, 2) -> (B * heads, Lq, L, P, 2)
    grids = (2 * sampling_locations.to(dtype) - 1).transpose(1, 2).flatten(0, 1)
    weights = attention_weights.to(dtype).transpose(1, 2).flatten(0, 1)  # (B * heads, Lq, L, P)
    out = None
    start = 0
    for lvl, (h, w) in enumerate(shapes):
        v = value[..., start:start + h * w].unflatten(-1, (h, w))
        start += h * w
        # (B * heads, D, Lq, P): zeros outside the map, pixel centres at (j + 0.5) / w
        sampled = F.grid_sample(v, grids[:, :, lvl], mode='bilinear', padding_mode='zeros',
                                align_corners=False)
        part = torch.einsum('ndqp,nqp->ndq', sampled, weights[:, :, lvl])
        out = part if out is None else out + part
    # (B * heads, D, Lq) -> (B, Lq, heads * D), channels head-major as in mmcv
    out = out.unflatten(0, (B, num_heads)).flatten(1, 2).transpose(1, 2)
    return out.to(out_dtype).contiguous()


def ms_deform_attn(value: torch.Tensor, spatial_shapes: Shapes,
                   level_start_index: Optional[torch.Tensor],
                   sampling_locations: torch.Tensor, attention_weights: torch.Tensor,
                   impl: str = 'auto') -> torch.Tensor:
    """Multi-scale deformable attention.

    Args:
        value (Tensor): (B, sum_l h_l * w_l, num_heads, head_dims), the levels flattened
            row-major one after the other.
        spatial_shapes (Tensor | Sequence[tuple[int, int]]): (L, 2) ``(h, w)`` of each level.
        level_start_index (Tensor, optional): (L,) offset of each level in ``value``; computed
            from ``spatial_shapes`` when None (only mmcv's op reads it).
        sampling_locations (Tensor): (B, num_query, num_heads, L, num_points, 2), ``(x, y)``
            normalised to [0, 1] per level; locations outside sample zeros.
        attention_weights (Tensor): (B, num_query, num_heads, L, num_points).
        impl (str): ``'auto'`` (mmcv's CUDA op for CUDA fp32/fp16 when available, else
            PyTorch), ``'pytorch'`` or ``'mmcv'`` (raises if unavailable or not applicable).

    Returns:
        Tensor: (B, num_query, num_heads * head_dims) in ``value``'s dtype.
    """
    if value.dim() != 4 or sampling_locations.dim() != 6 or attention_weights.dim() != 5:
        raise ValueError(f'ms_deform_attn: expected value (B, Lv, heads, D), sampling_locations '
                         f'(B, Lq, heads, L, P, 2), attention_weights (B, Lq, heads, L, P); got '
                         f'{tuple(value.shape)}, {tuple(sampling_locations.shape)}, '
                         f'{tuple(attention_weights.shape)}')
    shapes = shapes_to_list(spatial_shapes)
    if sum(h * w for h, w in shapes) != value.shape[1]:
        raise ValueError(f'ms_deform_attn: spatial_shapes {shapes} hold '
                         f'{sum(h * w for h, w in shapes)} positions but value has '
                         f'{value.shape[1]}')
    if len(shapes) != sampling_locations.shape[3]:
        raise ValueError(f'ms_deform_attn: {len(shapes)} levels in spatial_shapes but '
                         f'{sampling_locations.shape[3]} in sampling_locations')
    if choose_impl(value, impl) == 'pytorch':
        return ms_deform_attn_pytorch(value, shapes, sampling_locations, attention_weights)
    op = _load_mmcv_op()[0]
    shapes_t = shapes_to_tensor(spatial_shapes, value.device)
    if level_start_index is None:
        level_start_index = level_start_index_from_shapes(shapes_t)
    # The kernel reads everything in value's dtype (its Function casts the two float inputs).
    return op.apply(value.contiguous(), shapes_t.contiguous(),
                    level_start_index.to(device=value.device, dtype=torch.long).contiguous(),
                    sampling_locations.contiguous(), attention_weights.contiguous(),
                    _im2col_step(value.shape[0]))


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention layer (Deformable DETR), as used by ViT-Adapter.

    Args:
        d_model (int): Width of queries and of the flattened input features.
        n_levels (int): Number of feature levels.
        n_heads (int): Number of attention heads; must divide ``int(d_model * ratio)``.
        n_points (int): Sampling points per head and level.
        ratio (float): Width of the value projection relative to ``d_model`` (ViT-Adapter's
            ``deform_ratio``); the heads split this narrower value.
        impl (str): See :func:`ms_deform_attn`.

    Forward:
        query (Tensor): (B, Lq, d_model).
        reference_points (Tensor): (B or 1, Lq, n_levels or 1, 2) normalised ``(x, y)``; one
            point per level lets a caller express a query's position in each level's own frame.
        input_flatten (Tensor): (B, sum h_l * w_l, d_model).
        input_spatial_shapes (Tensor | Sequence): (n_levels, 2) ``(h, w)``.
        input_level_start_index (Tensor, optional): (n_levels,).
        input_padding_mask (Tensor, optional): (B, sum h_l * w_l) bool, True where padded.
        Returns (B, Lq, d_model).
    """

    def __init__(self, d_model: int = 256, n_levels: int = 4, n_heads: int = 8,
                 n_points: int = 4, ratio: float = 1.0, impl: str = 'auto') -> None:
        super().__init__()
        value_dims = int(d_model * ratio)
        if value_dims % n_heads:
            raise ValueError(f'MSDeformAttn: value width int(d_model * ratio) = {value_dims} '
                             f'(d_model={d_model}, ratio={ratio}) is not divisible by '
                             f'n_heads={n_heads}')
        if impl not in IMPLS:
            raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.ratio = ratio
        self.value_dims = value_dims
        self.impl = impl
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dims)
        self.output_proj = nn.Linear(value_dims, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable DETR's init: offsets start on rings of radius 1..n_points pixels, one
        direction per head; uniform attention; Xavier value/output projections."""
        nn.init.zeros_(self.sampling_offsets.weight)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2 * math.pi / self.n_heads)
        dirs = torch.stack([angles.cos(), angles.sin()], -1)
        dirs = dirs / dirs.abs().max(-1, keepdim=True)[0]  # onto the unit square's border
        radii = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = dirs.view(self.n_heads, 1, 1, 2) * radii  # (heads, 1, points, 2)
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, reference_points: torch.Tensor,
                input_flatten: torch.Tensor, input_spatial_shapes: Shapes,
                input_level_start_index: Optional[torch.Tensor] = None,
                input_padding_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        B, num_query, _ = query.shape
        num_value = input_flatten.shape[1]
        if reference_points.shape[-1] != 2:
            raise ValueError(f'MSDeformAttn: reference_points must end in (x, y), got shape '
                             f'{tuple(reference_points.shape)}')
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(B, num_value, self.n_heads, self.value_dims // self.n_heads)
        H, L, P = self.n_heads, self.n_levels, self.n_points
        offsets = self.sampling_offsets(query).view(B, num_query, H, L, P, 2).float()
        weights = self.attention_weights(query).view(B, num_query, H, L * P)
        weights = weights.float().softmax(-1).view(B, num_query, H, L, P)
        shapes = shapes_to_tensor(input_spatial_shapes, query.device)
        if shapes.shape[0] != L:
            raise ValueError(f'MSDeformAttn built for {L} levels got {shapes.shape[0]} shapes')
        # offsets are in pixels of each level: normalise by (w, h)
        normalizer = shapes.flip(-1).to(torch.float32)  # (L, 2) as (w, h)
        ref = reference_points.float()[:, :, None, :, None, :]  # (B|1, Lq, 1, L|1, 1, 2)
        locations = ref + offsets / normalizer[None, None, None, :, None, :]
        out = ms_deform_attn(value, shapes, input_level_start_index, locations, weights,
                             impl=self.impl)
        return self.output_proj(out)

    def extra_repr(self) -> str:
        return (f'd_model={self.d_model}, n_levels={self.n_levels}, n_heads={self.n_heads}, '
                f'n_points={self.n_points}, ratio={self.ratio}, impl={self.impl!r}')
