"""Imported by the kill test's config (custom_imports): ways to hold a training run at a known
point so the test can SIGKILL it there. Both announce the point by creating $KILL_MARKER."""
import os
import time

from mmengine.fileio import register_backend
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from engine.checkpoints.atomic import AtomicLocalBackend, atomic_write


def _announce():
    with open(os.environ['KILL_MARKER'], 'w') as f:
        f.write(str(os.getpid()))


@register_backend('slow_atomic_local')
class SlowAtomicBackend(AtomicLocalBackend):
    """The real atomic write, paused halfway through the checkpoint named $SLOW_CKPT."""

    def put(self, obj, filepath):
        if os.path.basename(str(filepath)) != os.environ.get('SLOW_CKPT'):
            return super().put(obj, filepath)

        def write(f):
            f.write(obj[:len(obj) // 2])
            f.flush()
            _announce()
            time.sleep(120)
            f.write(obj[len(obj) // 2:])

        atomic_write(filepath, write)


@HOOKS.register_module()
class PauseBeforeIterHook(Hook):
    """Sleeps before training iteration ``at`` (0-based), i.e. in the middle of the run."""

    def __init__(self, at):
        self.at = at

    def before_train_iter(self, runner, batch_idx, data_batch=None):
        if runner.iter == self.at:
            _announce()
            time.sleep(120)
