"""Atomic checkpoint writes and the non-finite loss guard."""
import os
from types import SimpleNamespace

import pytest
import torch
from mmengine.fileio import get_file_backend
from mmengine.logging import MessageHub

from engine.checkpoints.atomic import AtomicLocalBackend, atomic_write, atomic_write_bytes
from engine.hooks import NonFiniteLossHook


def test_atomic_backend_is_selected_and_writes(tmp_path):
    backend = get_file_backend(str(tmp_path / 'a.pth'), backend_args=dict(backend='atomic_local'))
    assert isinstance(backend, AtomicLocalBackend)
    backend.put(b'abc', tmp_path / 'a.pth')
    assert (tmp_path / 'a.pth').read_bytes() == b'abc'
    assert os.listdir(tmp_path) == ['a.pth']


def test_interrupted_write_keeps_previous_file(tmp_path):
    target = tmp_path / 'iter_1.pth'
    atomic_write_bytes(b'good', target)

    # A failure in the middle of the write (as a kill would be) leaves the old file intact
    # and no temporary file behind.
    with pytest.raises(ZeroDivisionError):
        atomic_write(target, lambda f: (f.write(b"half"), 1 / 0))
    assert target.read_bytes() == b'good'
    assert os.listdir(tmp_path) == ['iter_1.pth']


def _runner(tmp_path, last=None):
    hub = MessageHub.get_instance(f'nonfinite-{tmp_path.name}')
    if last:
        hub.update_info('last_ckpt', last)
    return SimpleNamespace(iter=41, work_dir=str(tmp_path), message_hub=hub)


def test_non_finite_loss_stops_with_iteration_and_checkpoint(tmp_path):
    hook = NonFiniteLossHook()
    runner = _runner(tmp_path, last=str(tmp_path / 'iter_40.pth'))
    hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(1.5)))
    with pytest.raises(FloatingPointError, match=r'non-finite loss \(nan\) at iteration 42.*'
                                                 r'iter_40\.pth'):
        hook.after_train_iter(runner, 0, outputs=dict(loss=torch.tensor(float('nan'))))


def test_non_finite_loss_without_checkpoint(tmp_path):
    hook = NonFiniteLossHook(keys=())
    with pytest.raises(FloatingPointError, match='loss_ce .*none saved yet'):
        hook.after_train_iter(_runner(tmp_path), 0,
                              outputs=dict(loss_ce=torch.tensor(float('inf')), acc=1.0))
