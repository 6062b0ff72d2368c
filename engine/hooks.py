"""Hooks of a training run.

* :class:`NonFiniteLossHook`: stops training at the first NaN/Inf loss, naming the iteration and
  the last good checkpoint, instead of writing NaN weights for days.
* :class:`SafeCheckpointStateHook`: keeps saved checkpoints loadable with
  ``torch.load(weights_only=True)`` (see :mod:`engine.checkpoints.safe_load`).
* :class:`ExportConsolidatedHook`: after a sharded (FSDP2 / DeepSpeed) run, writes the unsharded
  model as one checkpoint file.
"""
from __future__ import annotations

import math
import os.path as osp
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .checkpoints.safe_load import (
    make_checkpoint_weights_only_safe,
    restore_history_buffers,
)


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise at the first non-finite loss with the iteration and the last good checkpoint.

    Args:
        keys (Sequence[str]): Entries of the logged outputs to check (default: ``loss``, the
            total that mmengine logs; all entries whose name contains ``loss`` if empty).
        interval (int): Check every ``interval`` iterations (reading a loss syncs a GPU).
    """

    priority = 'VERY_HIGH'

    def __init__(self, keys: Sequence[str] = ('loss',), interval: int = 1) -> None:
        self.keys = tuple(keys)
        self.interval = interval

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if not outputs or not self.every_n_train_iters(runner, self.interval):
            return
        keys = self.keys or tuple(k for k in outputs if 'loss' in k)
        for key in keys:
            if key not in outputs:
                continue
            value = outputs[key]
            value = float(value.detach().float().mean()) if hasattr(value, 'detach') else float(value)
            if not math.isfinite(value):
                last = runner.message_hub.get_info('last_ckpt')
                if last is None:
                    marker = osp.join(runner.work_dir, 'last_checkpoint')
                    if osp.isfile(marker):
                        with open(marker) as f:
                            last = f.read().strip() or None
                raise FloatingPointError(
                    f'non-finite {key} ({value}) at iteration {runner.iter + 1}; training '
                    f'stopped. Last good checkpoint: {last or "none saved yet"}. Lower the '
                    f'learning rate or check the data, then resume from it with --resume.')


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
