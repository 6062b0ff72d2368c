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

import glob
import math
import os
import os.path as osp
import re
import tempfile
import zipfile
from pathlib import Path
from typing import BinaryIO, Callable, List, Optional, Sequence, Union

from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import HOOKS, MODEL_WRAPPERS


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


# Written by rank 0 into each FSDP2 checkpoint folder, after the tensors: the non-tensor part
# of the checkpoint (meta, message_hub, param_schedulers, optimizer param_groups). Loaded with
# ``torch.load(weights_only=True)``; its presence marks a complete checkpoint.
EXTRA_FILE = 'extra_state.pth'


def is_sharded_checkpoint(path: str) -> bool:
    """Whether ``path`` is a checkpoint folder written by ``FSDP2Strategy``
    (torch.distributed.checkpoint)."""
    return osp.isdir(path) and osp.isfile(osp.join(path, '.metadata'))


def is_deepspeed_checkpoint(path: str) -> bool:
    """Whether ``path`` is a checkpoint folder written by DeepSpeed (``DeepSpeedZeroStrategy``)."""
    return osp.isdir(path) and bool(glob.glob(osp.join(path, '*model_states.pt')))


def is_complete_checkpoint(path: str) -> bool:
    """A torch checkpoint (zip format) whose central directory is intact, or a sharded
    checkpoint folder that was finished: FSDP2 (``.metadata`` and the ``extra_state.pth`` that
    rank 0 writes last, intact) or DeepSpeed (model and optimizer state files, all intact)."""
    if is_sharded_checkpoint(path):
        return is_complete_checkpoint(osp.join(path, EXTRA_FILE))
    if is_deepspeed_checkpoint(path):
        model = glob.glob(osp.join(path, '*model_states.pt'))
        optim = glob.glob(osp.join(path, '*optim_states.pt'))
        return bool(optim) and all(map(is_complete_checkpoint, model + optim))
    try:
        with zipfile.ZipFile(path) as z:
            return z.testzip() is None
    except (OSError, zipfile.BadZipFile):
        return False


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint of ``work_dir``: the one ``last_checkpoint`` names when
    it is complete, else the newest complete ``iter_*.pth`` / ``epoch_*.pth``."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            last = f.read().strip()
        if last and osp.exists(last) and is_complete_checkpoint(last):
            return last
    candidates = []
    for pattern in ('iter_*.pth', 'epoch_*.pth'):
        for path in glob.glob(osp.join(work_dir, pattern)):
            m = re.search(r'_(\d+)\.pth$', path)
            if m:
                candidates.append((int(m.group(1)), path))
    for _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path
    return None


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):
    """MMEngine's DDP wrapper, also for a model on the CPU (the gloo backend).

    MMEngine's Runner always passes ``device_ids=[LOCAL_RANK]``, which torch's
    ``DistributedDataParallel`` refuses for a CPU module; here they are dropped when every
    parameter is on the CPU. ``tools/train.py`` selects it for distributed runs without CUDA.
    """

    def __init__(self, module, device_ids=None, **kwargs) -> None:
        if all(p.device.type == 'cpu' for p in module.parameters()):
            device_ids = None
        super().__init__(module=module, device_ids=device_ids, **kwargs)


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


def _dataset_cfgs(cfg):
    """Yield the leaf dataset configs of a (possibly wrapped) dataset config."""
    if not isinstance(cfg, dict):
        return
    if isinstance(cfg.get('datasets'), (list, tuple)):
        for sub in cfg['datasets']:
            yield from _dataset_cfgs(sub)
    elif isinstance(cfg.get('dataset'), dict):
        yield from _dataset_cfgs(cfg['dataset'])
    else:
        yield cfg


def check_dataset_paths(dataset_cfg, where: str) -> List[str]:
    """Problems with the folders and annotation files a dataset config points at: missing or
    empty image / label folders, missing annotation files. ``where`` prefixes each message."""
    problems = []
    for ds in _dataset_cfgs(dataset_cfg):
        root = ds.get('data_root') or ''
        if root and not osp.isdir(root):
            problems.append(f'{where}: data_root {root} does not exist')
            continue
        prefix = ds.get('data_prefix') or {}
        for key, sub in (prefix.items() if isinstance(prefix, dict) else []):
            if not sub or not isinstance(sub, str) or '://' in sub:
                continue
            folder = osp.join(root, sub)
            if not osp.isdir(folder):
                problems.append(f'{where}: data_prefix.{key} folder {folder} does not exist')
            elif not any(os.scandir(folder)):
                problems.append(f'{where}: data_prefix.{key} folder {folder} is empty')
        ann = ds.get('ann_file')
        if ann and isinstance(ann, str) and '://' not in ann:
            path = osp.join(root, ann)
            if not osp.isfile(path):
                problems.append(f'{where}: ann_file {path} does not exist')
    return problems
