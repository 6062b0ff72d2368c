"""Sharded checkpoint folders read safely and turned into one file.

* :func:`safe_dcp_reader`: a ``torch.distributed.checkpoint`` reader whose ``.metadata`` pickle
  goes through an allow-list of DCP's metadata classes and which refuses pickled entries.
* :func:`consolidate_checkpoint`: an FSDP2 or DeepSpeed folder -> one mmengine checkpoint file
  (``tools/model_converters/consolidate_checkpoint.py``).
"""
from __future__ import annotations

import contextlib
import glob
import os.path as osp
import pickle
from typing import Tuple

import torch

from .atomic import _atomic_torch_save
from .formats import EXTRA_FILE, is_deepspeed_checkpoint, is_sharded_checkpoint
from .safe_load import load_from_local_weights_only

# What the ``.metadata`` pickle of a torch.distributed.checkpoint folder may name: DCP's own
# metadata classes, torch.Size, dtypes and layouts, paths. Anything else (os.system, eval, ...)
# is refused before it runs.
_DCP_METADATA_GLOBALS = {
    ('torch.distributed.checkpoint.filesystem', '_StorageInfo'),
    ('torch.distributed.checkpoint.planner', 'LoadItemType'),
    ('torch.distributed.checkpoint.planner', 'WriteItemType'),
    ('torch', 'Size'),
    ('torch.serialization', '_get_layout'),
    ('torch._utils', '_rebuild_tensor_v2'),
    ('collections', 'OrderedDict'),
    ('pathlib', 'PosixPath'),
    ('pathlib', 'PurePosixPath'),
    ('pathlib', 'WindowsPath'),
    ('pathlib', 'PureWindowsPath'),
}


class _DCPMetadataUnpickler(pickle.Unpickler):

    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if module == 'torch.distributed.checkpoint.metadata' or \
                (module, name) in _DCP_METADATA_GLOBALS or \
                (module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'{self.path} names {module}.{name}, which no torch.distributed.checkpoint metadata '
            f'holds: refusing to unpickle it (a crafted checkpoint could run code this way)')


@contextlib.contextmanager
def _dcp_errors(path: str):
    """torch.distributed.checkpoint reports failures as a ``CheckpointException``, a
    ``BaseException`` that ``except Exception`` does not catch: re-raise the first rank's error
    as an ordinary one naming ``path`` (``UnpicklingError`` for what the allow-list refused)."""
    from torch.distributed.checkpoint.api import CheckpointException
    try:
        yield
    except CheckpointException as e:
        failures = list(e.failures.values())
        message = str(failures[0][0]) if failures else str(e)
        cls = pickle.UnpicklingError if 'refusing to unpickle' in message else RuntimeError
        raise cls(f'reading the sharded checkpoint {path}: {message}') from None


def safe_dcp_reader(path: str):
    """A ``FileSystemReader`` for ``path`` that unpickles ``.metadata`` with an allow-list and
    refuses non-tensor entries (torch's reader uses ``pickle.load`` for the first and its
    default planner ``torch.load(weights_only=False)`` for the second; our checkpoints hold
    tensors only, their other state is in ``extra_state.pth``, read with ``weights_only``)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.planner import LoadItemType

    class SafeFileSystemReader(FileSystemReader):

        def read_metadata(self, *args, **kwargs):
            meta_path = self._get_metadata_path(kwargs.get('rank'))
            with self.fs.create_stream(meta_path, 'rb') as f:
                metadata = _DCPMetadataUnpickler(f, str(meta_path)).load()
            if getattr(metadata, 'storage_meta', None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

        def read_data(self, plan, planner):
            pickled = [item.dest_index.fqn for item in plan.items
                       if item.type == LoadItemType.BYTE_IO]
            if pickled:
                raise pickle.UnpicklingError(
                    f'{path} holds pickled (non-tensor) entries {pickled[:5]}: not written by '
                    f'FSDP2Strategy, refusing to unpickle them')
            return super().read_data(plan, planner)

    return SafeFileSystemReader(path)


def _load_extra(path: str) -> dict:
    extra_file = osp.join(path, EXTRA_FILE)
    if not osp.isfile(extra_file):
        raise FileNotFoundError(
            f'{path} holds sharded tensors but no {EXTRA_FILE}: the save did not finish '
            f'(a crash while checkpointing?). Resume from an earlier checkpoint.')
    return load_from_local_weights_only(extra_file, map_location='cpu')


def consolidate_checkpoint(src: str, dst: str) -> dict:
    """Turn a sharded checkpoint folder into one mmengine checkpoint file.

    ``src`` is a folder written by :class:`FSDP2Strategy` (``torch.distributed.checkpoint``) or
    by :class:`DeepSpeedZeroStrategy` (DeepSpeed ZeRO 1/2/3; read with DeepSpeed's
    ``zero_to_fp32``). Runs in one process without GPUs or a process group, for any number of
    ranks that wrote ``src``, and keeps only the model tensors (not the optimizer state).
    ``dst`` gets ``{'meta': ..., 'state_dict': ...}`` (float32, the names of the unsharded
    model), which ``mmengine.runner.load_checkpoint``, the plain ``Runner`` and
    ``tools/test.py`` load.

    Note: the ``.metadata`` pickle of an FSDP2 folder is read through an allow-list of DCP's
    metadata classes (:func:`safe_dcp_reader`), but DeepSpeed's files are pickles that
    DeepSpeed loads with ``weights_only=False``: only consolidate DeepSpeed folders you (or
    someone you trust) wrote.

    Returns:
        dict: What was written.
    """
    if is_deepspeed_checkpoint(src):
        state_dict, meta = _read_deepspeed_folder(src)
    elif is_sharded_checkpoint(src):
        from torch.distributed.checkpoint.state_dict_loader import (
            _load_state_dict_from_keys,
        )
        extra = _load_extra(src)
        with _dcp_errors(src):
            loaded = _load_state_dict_from_keys(keys={'state_dict'}, checkpoint_id=src,
                                                storage_reader=safe_dcp_reader(src))
        state_dict = {k: v.detach().cpu() for k, v in loaded['state_dict'].items()}
        meta = dict(extra.get('meta', {}))
    else:
        raise FileNotFoundError(
            f'{src} is not a sharded checkpoint folder (neither the .metadata of an FSDP2 '
            f'checkpoint nor the *model_states.pt of a DeepSpeed one)')
    meta['consolidated_from'] = osp.abspath(src)
    out = {'meta': meta, 'state_dict': state_dict}
    _atomic_torch_save(out, dst)
    return out


def _read_deepspeed_folder(src: str) -> Tuple[dict, dict]:
    """Float32 weights and MMEngine's ``meta`` of a DeepSpeed checkpoint folder (trusted)."""
    try:
        from deepspeed.utils.zero_to_fp32 import (
            get_fp32_state_dict_from_zero_checkpoint,
        )
    except ImportError as e:
        raise ImportError(f'{src} is a DeepSpeed checkpoint; reading it needs the deepspeed '
                          f'package ({e})') from e
    folder, tag = osp.split(osp.abspath(src))
    state_dict = get_fp32_state_dict_from_zero_checkpoint(folder, tag=tag)
    state_dict = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                  for k, v in state_dict.items()}
    model_states = sorted(glob.glob(osp.join(src, '*model_states.pt')))[0]
    # DeepSpeed keeps MMEngine's extra state (meta, message hub, schedulers) in this pickle
    # next to its own objects; DeepSpeed itself loads it the same way.
    client = torch.load(model_states, map_location='cpu', weights_only=False)
    # zero_to_fp32 rebuilds what the optimizer trained (and buffers); frozen parameters are
    # only in the module state DeepSpeed saved (in its low precision; empty under ZeRO-3
    # unless DeepSpeed kept their fragments).
    missing = []
    for key, value in (client.get('module') or {}).items():
        if key in state_dict or not torch.is_tensor(value):
            continue
        if value.numel() == 0:
            missing.append(key)
            continue
        state_dict[key] = value.detach().float().cpu() if value.is_floating_point() else value
    if missing:
        raise ValueError(f'{src}: no values for {", ".join(missing)} (frozen parameters of a '
                         f'ZeRO-3 checkpoint); export with ExportConsolidatedHook during '
                         f'training instead')
    return state_dict, dict(client.get('meta') or {})
