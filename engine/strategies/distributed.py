"""Starting the process group on any device (MMEngine's launchers assume CUDA)."""
from __future__ import annotations

import datetime
import logging
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.dist import init_dist, is_distributed
from mmengine.logging import print_log


def _log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


def _slurm_to_torch_env(port: Optional[int] = None) -> None:
    """The torchrun variables from slurm's, as MMEngine's slurm launcher sets them, minus its
    ``torch.cuda.set_device``: rank = SLURM_PROCID, world = SLURM_NTASKS, the first host of
    SLURM_NODELIST (``scontrol``) as master unless MASTER_ADDR is set, MASTER_PORT or 29500."""
    import subprocess
    env = os.environ
    env['RANK'] = env['SLURM_PROCID']
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', env['SLURM_PROCID'])
    if 'MASTER_ADDR' not in env:
        env['MASTER_ADDR'] = subprocess.getoutput(
            f"scontrol show hostname {env['SLURM_NODELIST']} | head -n1").strip()
    if port is not None:
        env['MASTER_PORT'] = str(port)
    env.setdefault('MASTER_PORT', '29500')


def init_dist_any_device(launcher: str = 'pytorch', backend: str = 'nccl',
                         init_backend: str = 'torch', who: str = 'training', **kwargs) -> None:
    """MMEngine's ``init_dist``, usable without CUDA.

    MMEngine's ``pytorch`` and ``slurm`` launchers call ``torch.cuda.set_device`` whatever the
    backend, so a CPU run dies before the process group exists. Without a CUDA device this
    starts the group itself (slurm's variables turned into torchrun's): ``nccl`` becomes
    ``gloo`` (with a warning) and ``init_backend='deepspeed'`` goes through
    ``deepspeed.init_distributed``. With CUDA it is ``init_dist``.
    Does nothing when a process group already exists.
    """
    if is_distributed():
        return
    if torch.cuda.is_available():
        init_dist(launcher, backend, init_backend=init_backend, **kwargs)
        return
    if backend == 'nccl':
        _log(f'{who}: no CUDA device, using the gloo backend instead of nccl', logging.WARNING)
        backend = 'gloo'
    if launcher == 'slurm':
        _slurm_to_torch_env(kwargs.pop('port', None))
        launcher = 'pytorch'
    if launcher != 'pytorch':
        init_dist(launcher, backend, init_backend=init_backend, **kwargs)
        return
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    if init_backend == 'deepspeed':
        import deepspeed
        deepspeed.init_distributed(dist_backend=backend, **kwargs)
    else:
        dist.init_process_group(backend=backend, **kwargs)


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]
