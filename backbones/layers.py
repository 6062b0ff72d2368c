"""Building blocks of InternViT: RMSNorm, LayerScale, Attention, MLP, PatchEmbed, Block.

Parameter names follow the original InternVL ``.pth`` layout (``blocks.N.attn.qkv``,
``blocks.N.ls1.gamma``, ...), which is also timm's, so that those checkpoints load without
renaming and the other published layouts are converted to it (see ``checkpoint.py``).
"""
from __future__ import annotations

import importlib.util
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath

ATTN_IMPLS = ('auto', 'sdpa', 'flash_attn', 'naive')


def flash_attn_available() -> bool:
    """Whether the ``flash_attn`` package can be imported (it needs CUDA at call time)."""
    return importlib.util.find_spec('flash_attn') is not None


def resolve_attn_impl(requested: str, *, is_cuda: bool, dtype: torch.dtype, masked: bool,
                      flash_available: Optional[bool] = None) -> str:
    """The attention kernel a call runs: ``'flash_attn'`` for CUDA fp16/bf16 inputs without a
    mask when it was requested, or with ``'auto'`` when the flash_attn package is installed;
    ``'sdpa'`` for everything else that asked for ``'auto'`` / ``'flash_attn'``; ``'naive'``
    only on request."""
    if requested in ('sdpa', 'naive'):
        return requested
    if flash_available is None:
        flash_available = requested == 'flash_attn' or flash_attn_available()
    if flash_available and is_cuda and not masked and dtype in (torch.float16, torch.bfloat16):
        return 'flash_attn'
    return 'sdpa'


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, as in InternViT and transformers.

    Args:
        dim (int): Normalised (last) dimension.
        eps (float): Added to the mean square. InternViT uses 1e-6; 1e-5 already changes outputs
            by a few 1e-6 relative.
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f'{self.weight.shape[0]}, eps={self.eps}'


def build_norm(norm_type: str, dim: int, eps: float = 1e-6) -> nn.Module:
    if norm_type == 'rms_norm':
        return RMSNorm(dim, eps=eps)
    if norm_type == 'layer_norm':
        return nn.LayerNorm(dim, eps=eps)
    raise ValueError(f"norm_type must be 'rms_norm' or 'layer_norm', got {norm_type!r}")


class LayerScale(nn.Module):
    """Per-channel learnable residual scale (``gamma``)."""

    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with optional QK-norm over the full width.

    Unlike timm's per-head ``qk_norm``, InternViT normalises q and k across all heads together
    (a norm of size ``dim``) before splitting them into heads.

    Args:
        dim (int): Token width.
        num_heads (int): Number of heads; must divide ``dim``.
        qkv_bias (bool): Bias in the fused qkv projection.
        qk_norm (bool): Normalise q and k over the full width.
        norm_type (str): ``'rms_norm'`` or ``'layer_norm'`` for the QK-norm.
        attn_impl (str): ``'auto'`` (default: the flash-attn package for CUDA half-precision
            inputs when it is installed, else sdpa), ``'sdpa'``
            (``F.scaled_dot_product_attention``; on CUDA it dispatches to its own flash /
            memory-efficient kernels), ``'flash_attn'`` (the package is required; inputs it
            cannot take fall back to sdpa) or ``'naive'``.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False, qk_norm: bool = True,
                 norm_type: str = 'rms_norm', attn_impl: str = 'auto',
                 norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f'embed_dims ({dim}) must be divisible by num_heads ({num_heads})')
        if attn_impl not in ATTN_IMPLS:
            raise ValueError(f'attn_impl must be one of {ATTN_IMPLS}, got {attn_impl!r}')
        if attn_impl == 'flash_attn' and not flash_attn_available():
            raise ImportError("attn_impl='flash_attn' was requested but the flash_attn package "
                              "is not installed; `pip install flash-attn --no-build-isolation` "
                              "on a CUDA machine, or use attn_impl='sdpa'")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.attn_impl = attn_impl
        self._flash_available = attn_impl != 'sdpa' and flash_attn_available()
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.q_norm = build_norm(norm_type, dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = build_norm(norm_type, dim, norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor,
                attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, N, C) -> (B, N, C). ``attn_mask``: bool, broadcastable to (B, heads, N, N),
        True where a key takes part (used for padded windows)."""
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, C).unbind(2)
        q, k = self.q_norm(q), self.k_norm(k)
        impl = resolve_attn_impl(self.attn_impl, is_cuda=x.is_cuda, dtype=q.dtype,
                                 masked=attn_mask is not None,
                                 flash_available=self._flash_available)
        if impl == 'flash_attn':
            from flash_attn import flash_attn_func
            shape = (B, N, self.num_heads, self.head_dim)
            out = flash_attn_func(q.reshape(shape), k.reshape(shape), v.reshape(shape),
                                  softmax_scale=self.scale)
            return self.proj(out.reshape(B, N, C))
        q, k, v = (t.reshape(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                   for t in (q, k, v))
        if impl == 'sdpa':
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if attn_mask is not None:
                attn = attn.masked_fill(~attn_mask, float('-inf'))
            out = attn.softmax(dim=-1) @ v
        return self.proj(out.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    """fc1 -> GELU (exact) -> fc2."""

    def __init__(self, dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class PatchEmbed(nn.Module):
    """Non-overlapping patches by a strided conv; pads H, W up to a multiple of the patch.

    Returns tokens (B, Hp*Wp, C) and the grid size (Hp, Wp).
    """

    def __init__(self, patch_size: int = 14, in_chans: int = 3, embed_dim: int = 3200) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        H, W = x.shape[-2:]
        p = self.patch_size
        pad_h, pad_w = (-H) % p, (-W) % p
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw = (x.shape[2], x.shape[3])
        return x.flatten(2).transpose(1, 2), hw


def window_partition(x: torch.Tensor, hw: Tuple[int, int],
                     ws: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """(B, h*w, C) patch tokens -> (B * nW, ws*ws, C) windows (zero padded), padded (H, W)."""
    B, _, C = x.shape
    h, w = hw
    x = x.reshape(B, h, w, C)
    ph, pw = (-h) % ws, (-w) % ws
    if ph or pw:
        x = F.pad(x, (0, 0, 0, pw, 0, ph))
    H, W = h + ph, w + pw
    x = x.reshape(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, C), (H, W)


def window_unpartition(x: torch.Tensor, hw: Tuple[int, int], padded_hw: Tuple[int, int],
                       ws: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * nW, ws*ws, C) -> (B, h*w, C)."""
    H, W = padded_hw
    C = x.shape[-1]
    B = x.shape[0] // ((H // ws) * (W // ws))
    x = x.reshape(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
    return x[:, :hw[0], :hw[1]].reshape(B, hw[0] * hw[1], C)


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale and stochastic depth.

    With ``window_size`` set, attention runs inside non-overlapping windows of
    ``window_size x window_size`` tokens (for 1024 px detection inputs). The grid is zero padded
    (after ``norm1``) to a multiple of the window; with ``window_pad_mask`` (default) the padded
    tokens are masked out, without it they take part in the softmax unmasked, as in the
    InternVL-MMDetSeg detection backbone. A cls token, if the sequence has one, joins every
    window and takes the mean of its per-window outputs, so a single window covering the grid
    is exactly global attention.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = False,
                 qk_norm: bool = True, norm_type: str = 'rms_norm',
                 layer_scale_init: Optional[float] = 0.1, drop_path: float = 0.0,
                 attn_impl: str = 'auto', norm_eps: float = 1e-6,
                 window_size: Optional[int] = None, window_pad_mask: bool = True) -> None:
        super().__init__()
        self.window_size = window_size
        self.window_pad_mask = window_pad_mask
        self.norm1 = build_norm(norm_type, dim, norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias=qkv_bias, qk_norm=qk_norm,
                              norm_type=norm_type, attn_impl=attn_impl, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.norm2 = build_norm(norm_type, dim, norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """x: (B, prefix + h*w, C), the cls token (if any) first; ``hw`` is needed for
        windows."""
        y = self.norm1(x)
        y = self.window_attn(y, hw) if self.window_size and hw is not None else self.attn(y)
        x = x + self.drop_path(self.ls1(y))
        return x + self.drop_path(self.ls2(self.mlp(self.norm2(x))))

    def window_attn(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        B, N, C = x.shape
        ws = self.window_size
        prefix = N - hw[0] * hw[1]  # 1 with a cls token, 0 without
        windows, padded = window_partition(x[:, prefix:], hw, ws)
        n_win = windows.shape[0] // B
        seq = torch.cat([x[:, :prefix].repeat_interleave(n_win, dim=0), windows], dim=1)
        mask = None
        if padded != tuple(hw) and self.window_pad_mask:
            valid = torch.ones(1, hw[0] * hw[1], 1, device=x.device)
            valid = window_partition(valid, hw, ws)[0][..., 0] > 0  # (nW, ws*ws)
            valid = torch.cat([valid.new_ones(n_win, prefix), valid], dim=1).repeat(B, 1)
            mask = valid[:, None, None, :]
        out = self.attn(seq, attn_mask=mask)
        tokens = window_unpartition(out[:, prefix:], hw, padded, ws)
        if not prefix:
            return tokens
        cls = out[:, :prefix].reshape(B, n_win, prefix, C).mean(dim=1)
        return torch.cat([cls, tokens], dim=1)
