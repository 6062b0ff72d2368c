"""Absolute position embeddings: resampling between token grids (shared by the backbone, its
weight conversion and the adapter)."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F


def resample_abs_pos_embed(pos_embed: torch.Tensor, new_hw: Tuple[int, int],
                           old_hw: Optional[Tuple[int, int]] = None,
                           num_prefix_tokens: int = 1, antialias: bool = False) -> torch.Tensor:
    """Bicubic resampling (align_corners=False) of (1, prefix + h*w, C) position embeddings.

    ``antialias=False`` is what the InternVL reference, its Hugging Face model and transformers
    do. timm resamples with ``antialias=True``, which in PyTorch also changes the bicubic kernel
    when enlarging (up to 0.3 absolute on unit-variance inputs), so it is a separate switch.
    """
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    if old_hw is None:
        side = int(round(grid.shape[1] ** 0.5))
        old_hw = (side, side)
    if tuple(old_hw) == tuple(new_hw):
        return pos_embed
    C = grid.shape[-1]
    dtype = grid.dtype
    grid = grid.float().reshape(1, old_hw[0], old_hw[1], C).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=new_hw, mode='bicubic', align_corners=False,
                         antialias=antialias)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_hw[0] * new_hw[1], C).to(dtype)
    return torch.cat([prefix, grid], dim=1)
