"""The checkpoint formats a run writes, told apart on disk: a single torch file, an FSDP2
folder (torch.distributed.checkpoint) or a DeepSpeed folder, and whether one is complete."""
from __future__ import annotations

import glob
import os.path as osp
import zipfile

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
