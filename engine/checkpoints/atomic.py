"""Atomic checkpoint writes.

* ``AtomicLocalBackend`` (file backend ``'atomic_local'``): writes a file to a temporary name in
  the same folder, fsyncs it, then renames it over the target, so a crash or SIGKILL during a
  checkpoint write leaves the previous checkpoint (and ``last_checkpoint``) valid. mmengine's
  ``LocalBackend.put`` opens the target for writing directly, which leaves a truncated
  checkpoint behind. Use it through the checkpoint hook::

      default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000,
                                           backend_args=dict(backend='atomic_local')))

* :func:`atomic_write` / :func:`atomic_torch_save`: the same for any file we write ourselves.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, List, Union

import torch
from mmengine.fileio import LocalBackend, register_backend

TMP_SUFFIX = '.partial'


def atomic_write(filepath: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Write ``filepath`` atomically: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over the target only once complete."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(filepath)}.',
                               suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def atomic_write_bytes(data: bytes, filepath: Union[str, Path]) -> None:
    """Write ``data`` to ``filepath`` atomically (same-folder temporary file + rename)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f'expected bytes, got {type(data).__name__}')
    atomic_write(filepath, lambda f: f.write(data))


def remove_partial_writes(folder: str) -> List[str]:
    """Delete the temporary files that a killed atomic write left in ``folder``."""
    removed = []
    if osp.isdir(folder):
        for name in os.listdir(folder):
            if name.startswith('.') and name.endswith(TMP_SUFFIX):
                os.remove(osp.join(folder, name))
                removed.append(name)
    return removed


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """``LocalBackend`` whose writes are atomic (see the module docstring)."""

    def put(self, obj: bytes, filepath: Union[str, Path]) -> None:
        atomic_write_bytes(obj, filepath)

    def put_text(self, obj: str, filepath: Union[str, Path], encoding: str = 'utf-8') -> None:
        atomic_write_bytes(obj.encode(encoding), filepath)


def _atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename into place."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide checkpoints from other users
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise
