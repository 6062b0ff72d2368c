"""Hooks of a training run.

* :class:`NonFiniteLossHook`: stops training at the first NaN/Inf loss, naming the iteration and
  the last good checkpoint, instead of writing NaN weights for days.
* :class:`ResumeCheckHook`: a resumed checkpoint that is not a training checkpoint, or not of
  this model, is refused naming the keys, before anything is restored.
* :class:`SafeCheckpointStateHook`: keeps saved checkpoints loadable with
  ``torch.load(weights_only=True)`` (see :mod:`engine.checkpoints.safe_load`).
* :class:`ExportConsolidatedHook`: after a sharded (FSDP2 / DeepSpeed) run, writes the unsharded
  model as one checkpoint file.
"""
from __future__ import annotations

import math
import os.path as osp
import re
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from backbones.checkpoint import CheckpointError

from .checkpoints.formats import is_deepspeed_checkpoint, is_sharded_checkpoint
from .checkpoints.safe_load import (
    make_checkpoint_weights_only_safe,
    restore_history_buffers,
)


def _unwrap(model):
    return model.module if hasattr(model, 'module') and isinstance(model.module, nn.Module) \
        else model


def _parameters_finite(model) -> bool:
    """Whether every parameter this process holds (its shards, when sharded) is finite."""
    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in _unwrap(model).parameters()
                   if p.is_floating_point() and p.numel())


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise at the first non-finite loss with the iteration and the last good checkpoint.

    The loss checked at iteration N was computed before N's update; a checkpoint saved at N
    holds that update, so it may already hold diverged weights. A checkpoint is therefore
    called good only once a later loss was finite and the parameters were finite after it
    (NaN parameters stay NaN through every later update, so finite parameters then mean
    finite parameters when it was saved). The advice is ``load_from`` (weights only) with a
    lower learning rate: ``--resume`` would restore the same learning rate and optimizer state.

    Args:
        keys (Sequence[str]): Entries of the logged outputs to check (default: ``loss``, the
            total that mmengine logs; all entries whose name contains ``loss`` if empty).
        interval (int): Check every ``interval`` iterations (reading a loss syncs a GPU).
    """

    priority = 'VERY_HIGH'

    def __init__(self, keys: Sequence[str] = ('loss',), interval: int = 1) -> None:
        self.keys = tuple(keys)
        self.interval = interval
        self._good: Optional[str] = None      # confirmed: finite weights, finite loss after it
        self._confirmed: Optional[str] = None  # the last checkpoint looked at

    def before_train(self, runner) -> None:
        # A resumed run starts from a checkpoint; it is confirmed (or not) like any other.
        self._good = None
        self._confirmed = None

    def _last_saved(self, runner) -> Optional[str]:
        last = runner.message_hub.get_info('last_ckpt')
        if last is None:
            marker = osp.join(runner.work_dir, 'last_checkpoint')
            if osp.isfile(marker):
                with open(marker) as f:
                    last = f.read().strip() or None
        return last

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        keys = self.keys or tuple(k for k in outputs if 'loss' in k)
        last = self._last_saved(runner)  # saved at an earlier iteration (this one's is later)
        for key in keys:
            if key not in outputs:
                continue
            value = outputs[key]
            value = float(value.detach().float().mean()) if hasattr(value, 'detach') else float(value)
            if not math.isfinite(value):
                self._raise(runner, key, value, last)
        if last is not None and last != self._confirmed:
            self._confirmed = last
            model = getattr(runner, 'model', None)
            if model is None or _parameters_finite(model):
                self._good = last

    def _raise(self, runner, key: str, value: float, last: Optional[str]) -> None:
        good = self._good
        if last is not None and last != self._confirmed:
            # saved after the last finite loss: the loss computed from its weights (this one)
            # is not finite, so it is not a good checkpoint
            suspect = (f' {last} was saved after the last finite loss and holds the weights '
                       f'that gave this one: do not use it.')
        else:
            suspect = ''
        if good:
            advice = (f'Last good checkpoint (finite weights, and a finite loss after it): '
                      f'{good}. Start from its weights with a lower learning rate: '
                      f'--cfg-options load_from={good} optim_wrapper.optimizer.lr=<lower> '
                      f'(not --resume, which restores the old learning rate and optimizer '
                      f'state).')
        else:
            advice = ('Last good checkpoint: ' + ('none known' if last else 'none saved yet') +
                      '. Lower the learning rate or check the data, and train again.')
        raise FloatingPointError(
            f'non-finite {key} ({value}) at iteration {runner.iter + 1}; training stopped.'
            f'{suspect} {advice}')


@HOOKS.register_module()
class ResumeCheckHook(Hook):
    """Checks, before a resumed run restores anything, that the checkpoint is a training
    checkpoint of this model: ``meta`` present (backbone weights are no training checkpoint),
    and the same parameter names and shapes (else Adam fails later with a tensor-size error
    naming nothing). ``tools/train.py`` adds it to every run; a plain ``load_from`` (not a
    resume) is left to MMEngine.
    """

    priority = 'VERY_HIGH'

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        if not getattr(runner, '_resume', False):
            return
        source = getattr(runner, '_load_from', None) or 'the checkpoint'
        if isinstance(source, str) and (is_sharded_checkpoint(source)
                                        or is_deepspeed_checkpoint(source)):
            return  # a sharded folder: the strategy reads its tensors strictly itself
        if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get('meta'), dict) \
                or 'state_dict' not in checkpoint:
            keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else []
            raise CheckpointError(
                f'{source} is not a training checkpoint (no meta / state_dict; first keys '
                f'{keys}): backbone or model weights cannot be resumed from. Start from them '
                f'with load_from={source} (or the backbone\'s init_cfg) and no --resume.')
        sd = checkpoint['state_dict']
        sd = {re.sub(r'^module\.', '', k): v for k, v in sd.items()}
        model_sd = _unwrap(runner.model).state_dict()
        shapes = [f'{k}: checkpoint {tuple(v.shape)} vs model {tuple(model_sd[k].shape)}'
                  for k, v in sd.items() if k in model_sd and hasattr(v, 'shape')
                  and tuple(v.shape) != tuple(model_sd[k].shape)]
        missing = [k for k in model_sd if k not in sd]
        unexpected = [k for k in sd if k not in model_sd]
        if shapes or missing or unexpected:
            parts = []
            if shapes:
                parts.append(f'shape mismatch for {"; ".join(shapes[:5])}'
                             f'{" ..." if len(shapes) > 5 else ""}')
            if missing:
                parts.append(f'missing keys {missing[:5]}{" ..." if len(missing) > 5 else ""} '
                             f'({len(missing)})')
            if unexpected:
                parts.append(f'unexpected keys {unexpected[:5]}'
                             f'{" ..." if len(unexpected) > 5 else ""} ({len(unexpected)})')
            raise CheckpointError(
                f'cannot resume from {source}: it was written for another model ('
                f'{"; ".join(parts)}). Resume with the config that wrote it, or start from '
                f'its weights with load_from (no --resume).')


@HOOKS.register_module()
class SafeCheckpointStateHook(Hook):
    """Keep the checkpoints a ``Runner`` saves loadable with ``torch.load(weights_only=True)``.

    ``before_save_checkpoint`` applies :func:`make_checkpoint_weights_only_safe` to the state
    about to be written; ``after_load_checkpoint`` applies :func:`restore_history_buffers` before
    the runner resumes its ``MessageHub``. Runs last (priority ``LOWEST``) so that the state other
    hooks add is covered. ``tools/train.py`` adds it to every run; add it to ``custom_hooks`` when
    building a ``Runner`` yourself.
    """

    priority = 'LOWEST'

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        make_checkpoint_weights_only_safe(checkpoint)

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        restore_history_buffers(checkpoint)


@HOOKS.register_module()
class ExportConsolidatedHook(Hook):
    """After training, write the unsharded model as one checkpoint file in the work dir.

    For :class:`FSDP2Strategy` and :class:`DeepSpeedZeroStrategy` runs (a no-op warning
    otherwise): the result loads with
    ``tools/test.py CONFIG work_dirs/.../FILENAME`` and the plain ``Runner``.

    Args:
        filename (str): File name inside ``runner.work_dir``.
    """

    priority = 'LOW'

    def __init__(self, filename: str = 'consolidated.pth') -> None:
        self.filename = filename

    def after_train(self, runner) -> None:
        strategy = getattr(runner, 'strategy', None)
        if not hasattr(strategy, 'export_consolidated'):
            runner.logger.warning('ExportConsolidatedHook needs FlexibleRunner with '
                                  'FSDP2Strategy or DeepSpeedZeroStrategy; nothing exported')
            return
        path = osp.join(runner.work_dir, self.filename)
        strategy.export_consolidated(path, meta=dict(iter=runner.iter, epoch=runner.epoch))
        runner.logger.info(f'consolidated model written to {path}')
