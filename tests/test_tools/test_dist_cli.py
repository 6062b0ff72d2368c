"""``tools/dist_train.sh`` with 2 CPU processes (torchrun, gloo) for each engine: DDP, DeepSpeed
ZeRO-2 and FSDP2, on a tiny mmseg config; then ``tools/test.py`` on what they wrote. And
``tools/slurm_train.sh`` through a stand-in ``srun`` that starts the tasks on this machine.

The config is made deterministic (no flip, no shuffle, no BatchNorm), so 2 processes with 2
images each must end with the weights of 1 process with 4 images.
"""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from .test_train_test_cli import CLASSES, TEST, TINY_SEG_CONFIG, TRAIN, _write_synthetic

pytestmark = pytest.mark.slow
ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DIST_TRAIN = osp.join(ROOT, 'tools', 'dist_train.sh')
DETERMINISTIC = ['model.decode_head.norm_cfg=None', 'train_dataloader.dataset.pipeline.2.prob=0.0',
                 'train_dataloader.sampler.shuffle=False']


def _port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _env():
    return dict(os.environ, PYTHON=sys.executable, ALLOW_CPU_PROCESSES='1', PORT=str(_port()),
                OMP_NUM_THREADS='1', DS_ACCELERATOR='cpu')


def _check(res):
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-6000:]
    return res.stdout + res.stderr


def dist_train(config, work_dir, *args, gpus=2):
    return _check(subprocess.run(
        ['bash', DIST_TRAIN, str(config), str(gpus), '--work-dir', str(work_dir), *map(str, args)],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600))


def run(*args):
    return _check(subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, env=_env(),
                                 capture_output=True, text=True, timeout=600))


@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('dist_cli')
    _write_synthetic(tmp / 'data', 'train', 8, seed=0)
    _write_synthetic(tmp / 'data', 'val', 2, seed=1)
    config = tmp / 'fcn_internvit-tiny_2xb2-4i_synthetic-56x56.py'
    config.write_text(TINY_SEG_CONFIG.format(data_root=str(tmp / 'data'), classes=CLASSES))
    exported = tmp / 'fcn_internvit-tiny_export.py'
    exported.write_text(f"_base_ = ['./{config.name}']\n"
                        "custom_hooks = [dict(type='ExportConsolidatedHook')]\n")
    # one process, 4 images per step: the reference, and the pretrained file for load_from
    run(TRAIN, config, '--work-dir', tmp / 'single', '--cfg-options', *DETERMINISTIC,
        'train_dataloader.batch_size=4')
    return dict(tmp=tmp, config=config, exported=exported)


def _state(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def test_ddp_two_processes_equal_one_process_with_twice_the_batch(tiny):
    tmp = tiny['tmp']
    log = dist_train(tiny['config'], tmp / 'ddp', '--cfg-options', *DETERMINISTIC)
    assert 'Iter(train) [4/4]' in log
    single, ddp = _state(tmp / 'single' / 'iter_4.pth'), _state(tmp / 'ddp' / 'iter_4.pth')
    start = _state(tmp / 'single' / 'iter_2.pth')
    assert sorted(single) == sorted(ddp)
    moved = max(float((single[k] - start[k]).abs().max()) for k in single)
    diff = max(float((single[k] - ddp[k]).abs().max()) for k in single)
    assert moved > 1e-4 and diff < 1e-5, (moved, diff)


@pytest.mark.parametrize('strategy', ['deepspeed_zero2', 'fsdp2_full_shard'])
def test_sharded_engine_loads_trains_resumes_exports_and_tests(tiny, strategy):
    tmp = tiny['tmp']
    work = tmp / strategy
    pretrained = tmp / 'single' / 'iter_2.pth'
    log = dist_train(tiny['exported'], work, '--strategy', strategy, '--cfg-options',
                     *DETERMINISTIC, f'load_from={pretrained}')
    assert f'Load checkpoint from {pretrained}' in log
    assert osp.isdir(work / 'iter_4.pth')  # a sharded checkpoint folder
    exported = _state(work / 'consolidated.pth')
    assert sorted(exported) == sorted(_state(pretrained))
    # resume the folder named in last_checkpoint and go on to 6 iterations
    log = dist_train(tiny['exported'], work, '--strategy', strategy, '--resume',
                     '--cfg-options', *DETERMINISTIC, 'train_cfg.max_iters=6')
    assert 'resumed' in log.lower() and 'Iter(train) [6/6]' in log
    # tools/test.py: the folder is refused with the way out, the export is tested
    res = subprocess.run([sys.executable, TEST, str(tiny['config']), str(work / 'iter_6.pth')],
                         cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and 'consolidate_checkpoint.py' in res.stderr
    log = run(TEST, tiny['config'], work / 'consolidated.pth', '--work-dir', work / 'test',
              '--cfg-options', DETERMINISTIC[0])
    assert 'mIoU' in log
    # offline consolidation of the last folder gives the exported weights
    run('tools/model_converters/consolidate_checkpoint.py', work / 'iter_6.pth', work / 'off.pth')
    off, live = _state(work / 'off.pth'), _state(work / 'consolidated.pth')
    for k in live:
        torch.testing.assert_close(off[k], live[k], atol=0, rtol=0, msg=k)


FAKE_SRUN = r"""#!/usr/bin/env python3
# Stand-in for slurm's srun: starts --ntasks copies of the command here, with the variables
# slurm gives each task, and fails if any task fails.
import os, subprocess, sys
args, ntasks, i = sys.argv[1:], 1, 0
while i < len(args) and args[i].startswith('-'):
    if args[i].startswith('--ntasks='):
        ntasks = int(args[i].split('=', 1)[1])
    i += 2 if args[i] == '-p' else 1
procs = [subprocess.Popen(args[i:], env=dict(os.environ, SLURM_PROCID=str(r),
                                             SLURM_LOCALID=str(r), SLURM_NTASKS=str(ntasks),
                                             SLURM_NODELIST='localhost'))
         for r in range(ntasks)]
sys.exit(max(p.wait() for p in procs))
"""


@pytest.mark.parametrize('strategy', [None, 'fsdp2_full_shard'])
def test_slurm_train_runs_the_tasks(tiny, tmp_path, strategy):
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'srun').write_text(FAKE_SRUN)
    (bin_dir / 'srun').chmod(0o755)
    env = dict(_env(), PATH=f"{bin_dir}:{os.environ['PATH']}", GPUS='2', GPUS_PER_NODE='2',
               MASTER_ADDR='127.0.0.1', MASTER_PORT=str(_port()))
    work = tmp_path / 'work'
    extra = ['--strategy', strategy] if strategy else []
    res = subprocess.run(['bash', osp.join(ROOT, 'tools', 'slurm_train.sh'), 'partition', 'job',
                          str(tiny['config']), str(work), *extra, '--cfg-options',
                          *DETERMINISTIC], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    _check(res)
    ckpt = work / 'iter_4.pth'
    if strategy is None:  # DDP over the 2 slurm tasks: the single process's weights
        single, slurm = _state(tiny['tmp'] / 'single' / 'iter_4.pth'), _state(ckpt)
        diff = max(float((single[k] - slurm[k]).abs().max()) for k in single)
        assert diff < 1e-5, diff
    else:
        assert osp.isdir(ckpt)  # a sharded checkpoint folder
