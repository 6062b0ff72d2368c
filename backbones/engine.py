"""Training-run reliability pieces shared by segmentation and detection configs.

* ``AtomicLocalBackend`` (file backend ``'atomic_local'``): writes a file to a temporary name in
  the same folder, fsyncs it, then renames it over the target, so a crash or SIGKILL during a
  checkpoint write leaves the previous checkpoint (and ``last_checkpoint``) valid. mmengine's
  ``LocalBackend.put`` opens the target for writing directly, which leaves a truncated
  checkpoint behind. Use it through the checkpoint hook::

      default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000,
                                           backend_args=dict(backend='atomic_local')))

* ``NonFiniteLossHook``: stops training at the first NaN/Inf loss, naming the iteration and
  the last good checkpoint, instead of writing NaN weights for days.
"""
from __future__ import annotations

import math
import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Optional, Sequence, Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def atomic_write_bytes(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` atomically (same-folder temporary file + rename)."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(filepath)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes are atomic (see the module docstring)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


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
