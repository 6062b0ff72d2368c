"""A toy MMEngine model, dataset and Runner (no mmseg/mmdet), and pickles that run code."""
import os
import subprocess
import uuid

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset


class ToyModel(BaseModel):

    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(2, 1)

    def forward(self, inputs, labels=None, mode='tensor'):
        out = self.linear(inputs).squeeze(-1)  # default_collate stacks the batch
        if mode == 'loss':
            return dict(loss=((out - labels) ** 2).mean())
        return out


class ToyDataset(Dataset):
    metainfo = dict(classes=('a', 'b'))

    def __len__(self):
        return 8

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        return dict(inputs=torch.randn(2, generator=g), labels=torch.tensor(float(i % 2)))


def toy_runner(work_dir, max_iters=4, safe_hook=True, resume=False, load_from=None):
    """A Runner that trains ``ToyModel`` by iterations, saving every 2 iterations."""
    return Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex}',
        train_dataloader=dict(dataset=ToyDataset(), batch_size=2, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.01)),
        param_scheduler=dict(type='LinearLR', start_factor=0.5, by_epoch=False, end=4),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        custom_hooks=[dict(type='SafeCheckpointStateHook')] if safe_hook else None,
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        resume=resume,
        load_from=load_from,
        randomness=dict(seed=0),
        default_scope='mmengine')


class RunsShell:
    """Unpickling this calls ``os.system`` (the module torch blocks outright)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class RunsSubprocess(RunsShell):
    """Unpickling this calls ``subprocess.call`` (a module torch does not block by name)."""

    def __reduce__(self):
        return subprocess.call, (['touch', self.marker],)


class RunsEval(RunsShell):
    """Unpickling this calls ``builtins.eval``."""

    def __reduce__(self):
        return eval, (f"__import__('pathlib').Path({self.marker!r}).touch()",)


EVIL = (RunsShell, RunsSubprocess, RunsEval)


def save_evil_checkpoint(path, marker, kind=RunsShell):
    """A file that looks like an MMEngine checkpoint, with a payload in ``meta``."""
    torch.save({'meta': {'epoch': 0, 'iter': 2, 'payload': kind(marker)},
                'state_dict': ToyModel().state_dict(),
                'message_hub': {'log_scalars': {}, 'runtime_info': {}, 'resumed_keys': {}}},
               str(path))
    return path
