"""What the sharded strategies share: dtype names, the wrap-module selection, reading a
single-file checkpoint on rank 0, the strict key/shape report, and the consolidated export."""
from __future__ import annotations

import importlib
import importlib.util
import re
import time
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine.dist import get_rank

from backbones.layers import Block

from ..checkpoints.atomic import _atomic_torch_save

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
           'fp16': torch.float16, 'half': torch.float16, 'float32': torch.float32,
           'fp32': torch.float32, 'float': torch.float32}


def _dtype(value: Union[None, str, torch.dtype], what: str) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise ValueError(f'{what}: unknown dtype {value!r}; use one of {sorted(_DTYPES)} or None')


def _resolve_wrap_classes(wrap_modules: Optional[Sequence[Union[str, type]]]
                          ) -> Tuple[Tuple[type, ...], Tuple[str, ...]]:
    """Classes and bare class names to shard on their own. Dotted strings are imported."""
    if wrap_modules is None:
        return (Block,), ()
    if isinstance(wrap_modules, (str, type)):
        wrap_modules = [wrap_modules]
    classes, names = [], []
    for item in wrap_modules:
        if isinstance(item, type):
            classes.append(item)
        elif isinstance(item, str) and '.' in item:
            module_name, _, cls_name = item.rpartition('.')
            try:
                classes.append(getattr(importlib.import_module(module_name), cls_name))
            except (ImportError, AttributeError) as e:
                raise ValueError(f'wrap_modules: cannot import {item!r} ({e})') from None
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f'wrap_modules entries must be classes or class names, got {item!r}')
    return tuple(classes), tuple(names)


def _matches(module: nn.Module, classes: Tuple[type, ...], names: Tuple[str, ...]) -> bool:
    return isinstance(module, classes) or type(module).__name__ in names


def _read_full_checkpoint(filename: str) -> dict:
    """Read a single-file checkpoint on rank 0 (any path or URL MMEngine reads): every rank
    gets its non-tensor part, rank 0 also the ``state_dict`` (an empty dict elsewhere)."""
    from mmengine.runner.checkpoint import _load_checkpoint
    state_dict, checkpoint, error = {}, None, None
    if get_rank() == 0:
        try:
            checkpoint = _load_checkpoint(filename, map_location='cpu')
            if not isinstance(checkpoint, dict):
                raise TypeError(f'{filename}: expected a dict, got {type(checkpoint).__name__}')
            state_dict = checkpoint.pop('state_dict', None)
            if state_dict is None:  # a bare state dict
                state_dict, checkpoint = checkpoint, {}
            checkpoint.pop('optimizer', None)
        except Exception as e:  # the other ranks wait in the broadcast: tell them
            error = e
    box = [checkpoint, None if error is None else f'{type(error).__name__}: {error}']
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[1] is not None:
        raise RuntimeError(f'rank 0 could not read {filename}: {box[1]}')
    checkpoint = box[0]
    checkpoint['state_dict'] = state_dict
    return checkpoint


def _revise_keys(state_dict: dict, revise_keys: Iterable[Tuple[str, str]]) -> dict:
    for pattern, repl in revise_keys:
        state_dict = {re.sub(pattern, repl, k): v for k, v in state_dict.items()}
    return state_dict


def check_state_dict(state_dict: dict, shapes: Dict[str, Tuple[int, ...]], strict: bool,
                     logger=None) -> Tuple[dict, Optional[str]]:
    """Keep the entries of ``state_dict`` that the model (``shapes``: name -> shape) can take.

    Unexpected keys and shape mismatches are dropped and, like missing keys, reported in the
    words of ``torch.nn.Module.load_state_dict``: with ``strict`` the report is returned as the
    error (the caller raises it on every rank), otherwise logged as a warning.

    Returns:
        tuple[dict, str | None]: The loadable entries and the error, if any.
    """
    unexpected = sorted(k for k in state_dict if k not in shapes)
    missing = sorted(k for k in shapes if k not in state_dict)
    mismatched = sorted(
        f'{k}: checkpoint {tuple(v.shape)}, model {shapes[k]}'
        for k, v in state_dict.items()
        if k in shapes and torch.is_tensor(v) and tuple(v.shape) != shapes[k])
    kept = {k: v for k, v in state_dict.items()
            if k in shapes and (not torch.is_tensor(v) or tuple(v.shape) == shapes[k])}
    report = []
    if unexpected:
        report.append(f'unexpected key in source state_dict: {", ".join(unexpected)}')
    if missing:
        report.append(f'missing keys in source state_dict: {", ".join(missing)}')
    if mismatched:
        report.append(f'size mismatch (not loaded): {"; ".join(mismatched)}')
    if report and strict:
        return kept, 'Error(s) in loading state_dict:\n' + '\n'.join(report)
    if report:
        (logger.warning if logger is not None else print)('\n'.join(report))
    return kept, None


class _ConsolidatedExport:
    """``export_consolidated`` for a strategy with a collective ``full_model_state_dict()``."""

    def export_consolidated(self, filename: str, meta: Optional[dict] = None) -> None:
        """Write the unsharded float32 model as one mmengine checkpoint file on rank 0
        (``{'meta': ..., 'state_dict': ...}``). Collective: every rank calls it."""
        state_dict = self.full_model_state_dict()
        if get_rank() == 0:
            meta = dict(meta or {})
            meta.setdefault('seed', self.seed)
            meta.setdefault('time', time.strftime('%Y%m%d_%H%M%S', time.localtime()))
            _atomic_torch_save({'meta': meta, 'state_dict': state_dict}, filename)
        dist.barrier()
