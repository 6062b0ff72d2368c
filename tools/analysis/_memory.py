"""What get_flops.py and benchmark.py check before they allocate a model: its size (counted on
the meta device, nothing allocated) against the memory the device has free."""
from __future__ import annotations

import os
from typing import Optional, Tuple

import torch
import torch.nn as nn

GiB = 2 ** 30


def build_on_meta(model_cfg) -> nn.Module:
    """The model of ``model_cfg`` built on the meta device (no weights loaded, no memory)."""
    from mmengine.registry import MODELS
    cfg = model_cfg.copy()
    if 'backbone' in cfg:
        cfg.backbone.pop('init_cfg', None)
    with torch.device('meta'):
        return MODELS.build(cfg)


def parameter_count(model: nn.Module) -> Tuple[int, int]:
    """(all parameters, trainable parameters) of ``model``."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable


def model_bytes(model: nn.Module, train: bool = False) -> int:
    """Bytes of the model's parameters and buffers; with ``train`` also a float32 gradient and
    AdamW's two float32 states (the optimizer benchmark.py uses) per trainable parameter."""
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    n += sum(b.numel() * b.element_size() for b in model.buffers())
    if train:
        n += sum(12 * p.numel() for p in model.parameters() if p.requires_grad)
    return n


def free_memory(device: str) -> Optional[int]:
    """Bytes free on ``device``: ``torch.cuda.mem_get_info`` on CUDA, ``MemAvailable`` of
    /proc/meminfo (what can be had without swapping) on the CPU; None where unknown.
    ``INTERNVIT_FREE_MEMORY_GIB`` in the environment stands in for the measurement (tests)."""
    override = os.environ.get('INTERNVIT_FREE_MEMORY_GIB')
    if override:
        return int(float(override) * GiB)
    if str(device).startswith('cuda'):
        if not torch.cuda.is_available():
            return None
        return torch.cuda.mem_get_info(torch.device(device))[0]
    try:
        with open('/proc/meminfo') as f:
            for line in f:
                if line.startswith('MemAvailable:'):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def fits(need: int, device: str) -> Tuple[bool, Optional[int]]:
    """(whether ``need`` bytes fit in what ``device`` has free, the free bytes)."""
    free = free_memory(device)
    return (free is None or need <= free), free
