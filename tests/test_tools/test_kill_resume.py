"""Kill test: a run SIGKILLed mid-iteration or mid-checkpoint-write resumes from the last
complete checkpoint and ends with the same weights as an uninterrupted run."""
import os
import os.path as osp
import signal
import subprocess
import sys
import time

import pytest
import torch

from engine.checkpoints import is_complete_checkpoint

from .test_train_test_cli import CLASSES, ROOT, TINY_SEG_CONFIG, TRAIN, _write_synthetic

MAX_ITERS = 6


def _config(tmp_path, data_root, extra=''):
    text = TINY_SEG_CONFIG.format(data_root=str(data_root), classes=CLASSES)
    # no random augmentation, so that the data of a resumed run is the data of the first run
    text = text.replace("dict(type='RandomFlip', prob=0.5), ", '')
    text = text.replace("custom_imports = dict(imports=['backbones']",
                        "custom_imports = dict(imports=['backbones', 'tests.test_tools._kill_helpers']")
    text += f'''
train_cfg = dict(type='IterBasedTrainLoop', max_iters={MAX_ITERS}, val_interval=1000)
randomness = dict(seed=0, deterministic=True)
default_hooks['visualization'] = dict(type='SegVisualizationHook', draw=False)
{extra}
'''
    path = tmp_path / f'cfg_{abs(hash(extra))}.py'
    path.write_text(text)
    return path


def _train(config, work_dir, *args, env=None):
    res = subprocess.run([sys.executable, TRAIN, str(config), '--work-dir', str(work_dir), *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res.stdout + res.stderr


def _train_and_kill(config, work_dir, marker, env):
    env = dict(env, KILL_MARKER=str(marker))
    proc = subprocess.Popen([sys.executable, TRAIN, str(config), '--work-dir', str(work_dir)],
                            cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.stderr.read()[-5000:]
        assert time.time() < deadline, 'training never reached the kill point'
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _weights(path):
    return torch.load(path, map_location='cpu', weights_only=True)['state_dict']


def _assert_work_dir_clean(work_dir):
    names = os.listdir(work_dir)
    assert not [n for n in names if n.endswith('.partial')], names
    for n in names:
        if n.endswith('.pth'):
            assert is_complete_checkpoint(osp.join(work_dir, n)), n
            _weights(osp.join(work_dir, n))


@pytest.mark.slow
def test_sigkill_mid_iteration_and_mid_checkpoint_write(tmp_path):
    data_root = tmp_path / 'data'
    _write_synthetic(data_root, 'train', 6, seed=0)
    _write_synthetic(data_root, 'val', 2, seed=1)
    env = dict(os.environ)

    ref_dir = tmp_path / 'reference'
    _train(_config(tmp_path, data_root), ref_dir)
    expected = _weights(ref_dir / f'iter_{MAX_ITERS}.pth')

    # 1. killed during iteration 4 (after iter_2.pth was written)
    work = tmp_path / 'killed_in_iter'
    cfg = _config(tmp_path, data_root, "custom_hooks = [dict(type='PauseBeforeIterHook', at=3)]")
    _train_and_kill(cfg, work, tmp_path / 'm1', env)
    assert sorted(n for n in os.listdir(work) if n.endswith('.pth')) == ['iter_2.pth']
    log = _train(_config(tmp_path, data_root), work, '--resume')
    assert 'resumed epoch: 0, iter: 2' in log
    _assert_work_dir_clean(work)
    got = _weights(work / f'iter_{MAX_ITERS}.pth')
    assert got.keys() == expected.keys()
    for k in expected:
        assert torch.equal(got[k], expected[k]), k

    # 2. killed while iter_4.pth is half written
    work = tmp_path / 'killed_in_write'
    cfg = _config(tmp_path, data_root,
                  "default_hooks['checkpoint']['backend_args'] = dict(backend='slow_atomic_local')")
    _train_and_kill(cfg, work, tmp_path / 'm2', dict(env, SLOW_CKPT='iter_4.pth'))
    names = os.listdir(work)
    assert 'iter_4.pth' not in names and 'iter_2.pth' in names
    assert any(n.endswith('.partial') for n in names)  # the cut-short write, under a temp name
    assert (work / 'last_checkpoint').read_text().strip().endswith('iter_2.pth')
    log = _train(_config(tmp_path, data_root), work, '--resume')
    assert 'removed partial checkpoint writes' in log
    assert 'resumed epoch: 0, iter: 2' in log
    _assert_work_dir_clean(work)
    got = _weights(work / f'iter_{MAX_ITERS}.pth')
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


@pytest.mark.slow
def test_test_py_refuses_mismatched_checkpoint(tmp_path):
    from .test_train_test_cli import TEST
    data_root = tmp_path / 'data'
    _write_synthetic(data_root, 'val', 1, seed=1)
    (data_root / 'img_dir' / 'train').mkdir()
    config = _config(tmp_path, data_root)
    ckpt = tmp_path / 'other.pth'
    state = {'backbone.cls_token': torch.zeros(1, 1, 32), 'decode_head.extra': torch.zeros(1)}
    torch.save({'state_dict': state, 'meta': {}}, ckpt)
    res = subprocess.run([sys.executable, TEST, str(config), str(ckpt), '--work-dir',
                          str(tmp_path / 'w')], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2
    assert 'does not match the model' in res.stderr
    assert 'backbone.cls_token' in res.stderr and 'decode_head.extra' in res.stderr


def test_train_py_reports_missing_and_empty_data_folders(tmp_path, capsys):
    from .test_train_test_cli import _load
    data_root = tmp_path / 'data'
    (data_root / 'img_dir' / 'train').mkdir(parents=True)  # empty
    config = _config(tmp_path, data_root)
    with pytest.raises(SystemExit) as exc:
        _load(TRAIN).main([str(config), '--work-dir', str(tmp_path / 'w')])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f'train_dataloader: data_prefix.img_path folder {data_root}/img_dir/train is empty' in err
    assert f'data_prefix.seg_map_path folder {data_root}/ann_dir/train does not exist' in err


def test_check_dataset_paths_messages(tmp_path):
    from engine.dataset_checks import check_dataset_paths
    (tmp_path / 'img' / 'train').mkdir(parents=True)
    ds = dict(type='RepeatDataset', times=2, dataset=dict(
        data_root=str(tmp_path), data_prefix=dict(img_path='img/train', seg_map_path='ann/train'),
        ann_file='missing.json'))
    problems = check_dataset_paths(ds, 'cfg.py: train_dataloader')
    assert problems == [
        f'cfg.py: train_dataloader: data_prefix.img_path folder {tmp_path}/img/train is empty',
        f'cfg.py: train_dataloader: data_prefix.seg_map_path folder {tmp_path}/ann/train does '
        f'not exist',
        f'cfg.py: train_dataloader: ann_file {tmp_path}/missing.json does not exist']
    assert check_dataset_paths(dict(data_root=str(tmp_path / 'nope')), 'x') == [
        f'x: data_root {tmp_path}/nope does not exist']


@pytest.mark.parametrize('script,args', [('dist_train.sh', ['cfg.py']),
                                         ('dist_test.sh', ['cfg.py', 'ckpt.pth'])])
def test_dist_scripts_refuse_more_gpus_than_exist(script, args):
    n = torch.cuda.device_count()
    res = subprocess.run(['bash', osp.join(ROOT, 'tools', script), *args, str(n + 1)],
                         capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 2
    assert f'asked for {n + 1} GPUs on this node but {n} are available' in res.stderr
