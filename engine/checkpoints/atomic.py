"""Atomic checkpoint writes.

* ``AtomicLocalBackend`` (file backend ``'atomic_local'``): writes a file to a temporary name in
  the same folder, fsyncs it, then renames it over the target, so a crash or SIGKILL during a
  checkpoint write leaves the previous checkpoint (and ``last_checkpoint``) valid. mmengine's
  ``LocalBackend.put`` opens the target for writing directly, which leaves a truncated
  checkpoint behind. Use it through the checkpoint hook::

      default_hooks = dict(checkpoint=dict(type='CheckpointHook', interval=1000,
                                           backend_args=dict(backend='atomic_local')))

* :func:`atomic_write` / :func:`_atomic_torch_save`: the same for any file we write ourselves.

Files get the permissions a plain ``open(path, 'wb')`` gives (``0o666`` less the umask, or
those of the file replaced), as mmengine's own writes do.
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


def _current_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``)."""
    try:
        with open('/proc/self/status') as f:
            for line in f:
                if line.startswith('Umask:'):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _final_mode(filepath: str) -> int:
    """The permissions a plain ``open(filepath, 'wb')`` would leave: those of the file it
    replaces, or ``0o666`` less the umask for a new file (``mkstemp`` creates 0600 files,
    which would hide checkpoints from the rest of a team on a shared cluster)."""
    try:
        return os.stat(filepath).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_current_umask()


def atomic_write(filepath: Union[str, Path], write: Callable[[BinaryIO], None]) -> None:
    """Write ``filepath`` atomically: ``write(f)`` fills a temporary file in the same folder,
    which is fsynced and renamed over the target only once complete. The result has the
    permissions ``open(filepath, 'wb')`` would give it (the umask's, or the replaced file's)."""
    filepath = str(filepath)
    folder = osp.dirname(osp.abspath(filepath))
    os.makedirs(folder, exist_ok=True)
    mode = _final_mode(filepath)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(filepath)}.',
                               suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fchmod(f.fileno(), mode)
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
    """``torch.save`` through :func:`atomic_write`."""
    atomic_write(path, lambda f: torch.save(obj, f))
