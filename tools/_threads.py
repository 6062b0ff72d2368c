"""CPU thread count of the tools (``--threads``): what tools/train.py, test.py, infer.py, demo.py
and analysis/benchmark.py share.

torch's default is one intra-op thread per core. On a machine whose cores are busy with other
work, OpenMP's spinning barriers then make every small op wait for a descheduled thread:
measured on a shared 2-core machine, ``tools/test.py`` on the demo took 40 s with torch's default
and 8 s with one thread, ``benchmark.py --train`` ran 1.7 vs 24 img/s. With the cores idle the
default wins by less than 2x. The default here is therefore the cores that are free, keeping one
for the data loader and the rest of the process: ``cores - 1 - load``, at least 1 (always 1 on a
2-core machine). ``OMP_NUM_THREADS`` in the environment, or ``--threads N``, overrides it.
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from typing import Optional, Tuple

# mmengine imports pkg_resources (setuptools >= 81 warns at every start); the tools that import
# this module before mmengine do not show it
warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API')
import tools._quiet  # noqa: E402,F401 (DS_ACCELERATOR=cpu without a GPU, before DeepSpeed loads)

HELP = ('torch intra-op CPU threads (default: OMP_NUM_THREADS if set, else the free cores: '
        'cores - 1 - load average, at least 1)')


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (a positive integer)."""
    parser.add_argument('--threads', type=_positive_int, default=None, metavar='N', help=HELP)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}') from None
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be a positive integer, got {text!r}')
    return value


def cpu_count() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or Slurm)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> Optional[float]:
    """The 1-minute load average, or None where the OS has none."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def default_threads(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """Free cores less one (for the data loader), at least 1: ``cores - 1 - ceil(load)``
    (load rounded to one decimal first, so that an idle machine's 0.05 counts as 0)."""
    cores = cpu_count() if cores is None else cores
    load = load_average() if load is None else load
    busy = math.ceil(round(load or 0.0, 1))
    return max(1, min(cores - 1, cores - 1 - busy))


def choose_threads(threads: Optional[int]) -> Tuple[int, str]:
    """The thread count and why: ``--threads``, else OMP_NUM_THREADS, else the default."""
    if threads is not None:
        return threads, '--threads'
    env = os.environ.get('OMP_NUM_THREADS', '').strip()
    if env.isdigit() and int(env) > 0:
        return int(env), 'OMP_NUM_THREADS'
    return default_threads(), f'default: {cpu_count()} cores, load {load_average() or 0:.1f}'


def set_threads(threads: Optional[int] = None) -> Tuple[int, str]:
    """Set torch's intra-op threads (and OMP_NUM_THREADS for worker processes started later);
    returns (threads, why). Call it before any heavy work."""
    n, why = choose_threads(threads)
    os.environ['OMP_NUM_THREADS'] = str(n)
    import torch
    torch.set_num_threads(n)
    return n, why


def describe_machine() -> str:
    """``'2 cores, load 1.53 0.98 0.75'``: what a timing was measured on."""
    try:
        load = ' '.join(f'{x:.2f}' for x in os.getloadavg())
    except (AttributeError, OSError):
        load = 'unknown'
    return f'{cpu_count()} cores, load {load}'


def prepare_process(threads: Optional[int] = None) -> int:
    """What every tool does first after parsing its arguments: the thread count above and the
    terminal output of tools/_quiet.py. Returns the thread count."""
    from tools._quiet import quiet_upstream_warnings
    quiet_upstream_warnings()
    return set_threads(threads)[0]
