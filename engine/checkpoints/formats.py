"""The checkpoint formats a run writes, told apart on disk: a single torch file, an FSDP2
folder (torch.distributed.checkpoint) or a DeepSpeed folder, and whether one is complete."""
from __future__ import annotations

import glob
import json
import os.path as osp
import zipfile
from typing import Optional

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


def weights_file_problem(path: str) -> Optional[str]:
    """What is wrong with the weights at ``path``, found cheaply (directories and the end of
    files only: nothing unpickled, no tensor data read), or None: a missing path, an empty or
    truncated torch zip, a safetensors file whose header or data is cut short, an index json
    that does not parse, a Hugging Face folder without weights. For up-front checks of the
    paths a config names, before a runner is built (minutes for a 6B model)."""
    from backbones.checkpoint import describe_unreadable
    if not osp.exists(path):
        return f'{path} does not exist'
    if osp.isdir(path):
        if is_sharded_checkpoint(path) or is_deepspeed_checkpoint(path):
            return None
        for name in ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                     'pytorch_model.bin.index.json'):
            if osp.isfile(osp.join(path, name)):
                return weights_file_problem(osp.join(path, name))
        return (f'{path} is a directory without model.safetensors(.index.json) or '
                f'pytorch_model.bin(.index.json)')
    if path.endswith('.json'):
        try:
            with open(path) as f:
                index = json.load(f)
        except (ValueError, UnicodeDecodeError) as e:
            return f'{path}: not a valid index json ({e})'
        if not isinstance(index, dict) or not isinstance(index.get('weight_map'), dict):
            return f'{path}: no "weight_map" in the index json'
        return None
    if path.endswith('.safetensors'):
        size = osp.getsize(path)
        try:
            with open(path, 'rb') as f:
                n = int.from_bytes(f.read(8), 'little')
                header = json.loads(f.read(n)) if 8 <= 8 + n <= size else None
        except (ValueError, UnicodeDecodeError) as e:
            return describe_unreadable(path, e, 'safetensors')
        if not isinstance(header, dict):
            return describe_unreadable(path, ValueError('header cut short'), 'safetensors')
        end = max([v['data_offsets'][1] for k, v in header.items()
                   if k != '__metadata__' and isinstance(v, dict) and 'data_offsets' in v] or [0])
        if 8 + n + end > size:
            return (f'{path} is truncated: its header describes {8 + n + end} bytes, the file '
                    f'has {size}')
        return None
    try:
        with zipfile.ZipFile(path):
            return None
    except (OSError, zipfile.BadZipFile) as e:
        if _starts_with(path, b'\x80'):
            return None  # a legacy (non-zip) torch pickle: only loading tells
        return describe_unreadable(path, e)


def _starts_with(path: str, magic: bytes) -> bool:
    with open(path, 'rb') as f:
        return f.read(len(magic)) == magic
