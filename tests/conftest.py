import os
import sys

import pytest

# The test models are tiny: intra-op threads buy nothing, and on a shared 2-core machine
# OpenMP's spinning barriers made them 5-10x slower. Subprocesses (torchrun, tools/*.py)
# inherit the variable.
os.environ.setdefault('OMP_NUM_THREADS', '1')

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


@pytest.fixture(scope='session')
def repo_root():
    return ROOT


def pytest_configure(config):
    import torch
    torch.set_num_threads(int(os.environ['OMP_NUM_THREADS']))
