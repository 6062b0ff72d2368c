"""Terminal output of the tools that says something to our users.

:func:`quiet_upstream_warnings` (called first by tools/train.py, test.py, infer.py, demo.py and
the analysis tools):

* silences upstream deprecation notices that name no setting of ours and that a user cannot act
  on: mmseg's ``reduce_zero_label`` (we set it on the dataset, as asked), ``build_loss`` & co.,
  ``avg_non_ignore``; mmengine's ``FileClient`` / ``HardDiskBackend`` (used inside mmseg);
  DeepSpeed's "Setting accelerator to CPU" (``DS_ACCELERATOR=cpu`` is set where there is no
  CUDA device, which is what DeepSpeed picks anyway);
* prints the other Python warnings as Python does (once per place), and only on rank 0 of a
  distributed run;
* keeps the runner's long start-up report (system environment, the whole config, the hook
  order: about 500 lines) in the log file (``WORK_DIR/<timestamp>/<timestamp>.log``) and off
  the terminal, where one line says where it went.

The terminal filter is attached to each MMLogger as MMEngine creates it (MMLogger keeps its
instances in a class-level dict; we wrap that dict's ``__setitem__``): nothing of mmengine's code
changes, and processes that do not call this function are unaffected. ``INTERNVIT_VERBOSE=1``
turns all of it off.
"""
from __future__ import annotations

import logging
import os
import warnings
from collections import OrderedDict

# (message regex, category) pairs of Python warnings that say nothing to our users
IGNORED_WARNINGS = [
    r'`reduce_zero_label` will be deprecated',
    r'``build_(loss|backbone|neck|head|pixel_sampler)`` would be deprecated soon',
    r'Default ``avg_non_ignore`` is False',
    r'Failed to add <class .mmengine\.visualization\.vis_backend\.LocalVisBackend',
    r'The `save_dir` is None',  # infer.py draws without a vis backend
    r'`Visualizer` backend is not initialized because save_dir is None',
    r'On January 1, 2023, MMCV will release v2\.0\.0',
    r'__floordiv__ is deprecated',
    r'torch\.meshgrid: in an upcoming release, it will be required',
    r'The draw is False, it means that the hook for visualization',  # the default, not ours
    r'``MultiScaleDeformableAttention`` has been moved to',
    r'pkg_resources is deprecated as an API',
]
# MMLogger records (print_log) dropped everywhere
IGNORED_LOG_MESSAGES = (
    '"FileClient" will be deprecated in future',
    '"HardDiskBackend" is the alias of "LocalBackend"',
    'The prefix is not set in metric class',
)
# MMLogger records kept in the log file but not printed on the terminal (the runner's start-up
# report); the first one dropped is replaced by a line saying where the report is
FILE_ONLY_PREFIXES = ('\n' + '-' * 60 + '\nSystem environment:', 'Config:\n',
                      'Hooks will be executed in the following order:',
                      'Distributed training is not used, all SyncBatchNorm')


class TerminalFilter(logging.Filter):
    """Drops upstream noise everywhere and the start-up report from the terminal handler
    (records are shared by a logger's handlers, so they are never modified here)."""

    def __init__(self, logger: logging.Logger, handler: logging.Handler,
                 terminal: bool) -> None:
        super().__init__()
        self.logger = logger
        self.handler = handler
        self.terminal = terminal
        self.said_where = False

    def filter(self, record: logging.LogRecord) -> bool:
        msg = str(record.msg)
        if msg.startswith(IGNORED_LOG_MESSAGES):
            return False
        if self.terminal and msg.startswith(FILE_ONLY_PREFIXES):
            if not self.said_where:
                self.said_where = True
                where = next((h.baseFilename for h in self.logger.handlers
                              if isinstance(h, logging.FileHandler)), None)
                self.handler.stream.write(
                    'environment, config and hook order: in the log file'
                    + (f' {where}' if where else '') + ' (INTERNVIT_VERBOSE=1 prints them '
                    'here)\n')
            return False
        return True


def attach(logger: logging.Logger) -> None:
    """Our filters on ``logger``'s handlers (idempotent)."""
    for handler in logger.handlers:
        if any(isinstance(f, TerminalFilter) for f in handler.filters):
            continue
        terminal = type(handler) is logging.StreamHandler
        handler.addFilter(TerminalFilter(logger, handler, terminal=terminal))


class _AttachingDict(OrderedDict):
    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if isinstance(value, logging.Logger):
            attach(value)


def quiet_upstream_warnings() -> None:
    if os.environ.get('INTERNVIT_VERBOSE') == '1':
        return
    rank = int(os.environ.get('RANK', os.environ.get('SLURM_PROCID', '0')) or 0)
    if rank > 0:
        warnings.simplefilter('ignore')  # rank 0 says it
    else:
        for pattern in IGNORED_WARNINGS:
            warnings.filterwarnings('ignore', message=pattern)
    default_deepspeed_accelerator()
    from mmengine.logging import MMLogger
    if not isinstance(MMLogger._instance_dict, _AttachingDict):
        wrapped = _AttachingDict(MMLogger._instance_dict)
        MMLogger._instance_dict = wrapped
        for logger in wrapped.values():
            attach(logger)


GPU_DEVICE_NODES = ('/dev/nvidiactl', '/dev/nvidia0', '/dev/kfd', '/dev/dxg')


def default_deepspeed_accelerator() -> None:
    """``DS_ACCELERATOR=cpu`` where the machine has no GPU device node (NVIDIA, AMD, WSL):
    what DeepSpeed would pick, without its warning. Cheap (no torch import), so the tools call
    it before anything imports DeepSpeed; where a GPU may exist, DeepSpeed decides as usual."""
    if os.environ.get('INTERNVIT_VERBOSE') == '1' or 'DS_ACCELERATOR' in os.environ:
        return
    if not any(os.path.exists(p) for p in GPU_DEVICE_NODES):
        os.environ['DS_ACCELERATOR'] = 'cpu'


default_deepspeed_accelerator()  # on import: tools/_threads.py imports this module first
