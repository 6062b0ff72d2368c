"""What a new user meets first (issue 18, and issue 17's tools/infer.py points): thread counts,
tools/infer.py on folders and bad inputs, --show-dir / --out / --tta of tools/test.py, the
launchers on a machine without GPUs, readable drawings, quiet terminals, the Makefile."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')
INFER = osp.join(ROOT, 'tools', 'infer.py')
TEST = osp.join(ROOT, 'tools', 'test.py')


def _env(**extra):
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS='1')
    env.update(extra)
    return env


def _run(args, timeout=600, **env):
    return subprocess.run(args, cwd=ROOT, env=_env(**env), capture_output=True, text=True,
                          timeout=timeout)


# --------------------------------------------------------------------------- threads
def test_default_threads_leave_busy_cores_alone():
    from tools._threads import default_threads
    assert default_threads(cores=2, load=0.0) == 1    # a core for the data loader
    assert default_threads(cores=2, load=3.0) == 1
    assert default_threads(cores=16, load=0.04) == 15  # idle
    assert default_threads(cores=16, load=4.2) == 10   # 5 cores busy
    assert default_threads(cores=16, load=40.0) == 1


def test_threads_flag_and_environment(monkeypatch):
    import argparse

    from tools._threads import add_threads_argument, choose_threads
    parser = argparse.ArgumentParser()
    add_threads_argument(parser)
    assert parser.parse_args(['--threads', '3']).threads == 3
    with pytest.raises(SystemExit):
        parser.parse_args(['--threads', '0'])
    monkeypatch.setenv('OMP_NUM_THREADS', '2')
    assert choose_threads(None) == (2, 'OMP_NUM_THREADS')
    assert choose_threads(5) == (5, '--threads')
    monkeypatch.delenv('OMP_NUM_THREADS')
    assert choose_threads(None)[1].startswith('default')


def _load(path, name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_tool_takes_threads(tmp_path):
    cfg = tmp_path / 'cfg.py'
    cfg.write_text("default_scope = 'mmseg'\n")
    ckpt = tmp_path / 'm.pth'
    torch.save({'state_dict': {}}, ckpt)
    img = tmp_path / 'a.png'
    _write_image(img, 16, 16)
    train = _load(osp.join(ROOT, 'tools', 'train.py'), 'train_threads')
    test = _load(TEST, 'test_threads')
    infer = _load(INFER, 'infer_threads')
    bench = _load(osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'), 'bench_threads')
    from tools import demo
    assert train.parse_args([str(cfg), '--threads', '2'])[1].threads == 2
    assert test.parse_args([str(cfg), str(ckpt), '--threads', '2'])[1].threads == 2
    assert infer.parse_args([str(cfg), str(ckpt), str(img), '--threads', '2']).threads == 2
    assert bench.parse_args([str(cfg), '--threads', '2']).threads == 2
    assert demo.parse_args(['--threads', '2']).threads == 2


def test_benchmark_prints_threads_and_load(capsys):
    bench = _load(osp.join(ROOT, 'tools', 'analysis', 'benchmark.py'), 'bench_print')
    bench.main([DEMO, '--shape', '112', '--batch', '1', '--repeat', '1', '--warmup', '0',
                '--device', 'cpu', '--threads', '1'])
    out = capsys.readouterr().out
    assert re.search(r'1 torch thread\(s\); machine: \d+ cores, load [\d.]+ [\d.]+ [\d.]+', out)


def test_help_describes_the_flags():
    for tool, flags in (('benchmark.py', ['--batch', '--train', '--repeat', '--threads']),
                        ('memory_plan.py', ['--gpus', '--gpu-mem', '--batch', '--crop'])):
        res = _run([sys.executable, osp.join(ROOT, 'tools', 'analysis', tool), '--help'])
        assert res.returncode == 0, res.stderr
        for flag in flags:  # each flag followed by words that describe it
            assert re.search(re.escape(flag) + r'[^\n]*\n?\s+\S+\s+\S+', res.stdout), (tool, flag)
        assert 'DeepSpeed' not in res.stdout + res.stderr


# --------------------------------------------------------------------------- infer.py
def _write_image(path, w, h, seed=0):
    from PIL import Image
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


@pytest.fixture(scope='module')
def demo_ckpt(tmp_path_factory):
    """A random-weight checkpoint of the demo model, with the dataset meta tools/train.py
    writes, and one holding the backbone only."""
    from mmengine.config import Config
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import save_checkpoint
    import backbones  # noqa: F401
    tmp = tmp_path_factory.mktemp('infer')
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmseg')
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    full, partial = tmp / 'full.pth', tmp / 'backbone_only.pth'
    meta = dict(dataset_meta=dict(classes=tuple(cfg.metainfo['classes']),
                                  palette=cfg.metainfo['palette']))
    save_checkpoint(dict(state_dict=model.state_dict(), meta=meta), str(full))
    save_checkpoint(dict(state_dict={k: v for k, v in model.state_dict().items()
                                     if k.startswith('backbone.')}, meta=meta), str(partial))
    images = tmp / 'images'
    images.mkdir()
    for i in range(3):
        _write_image(images / f'img{i}.jpg', 96 + 8 * i, 80, seed=i)
    return dict(tmp=tmp, full=full, partial=partial, images=images)


def test_infer_folder_writes_one_drawing_per_image_in_one_process(demo_ckpt, capsys):
    infer = _load(INFER, 'infer_folder')
    out_dir = demo_ckpt['tmp'] / 'out'
    outs = infer.main([DEMO, str(demo_ckpt['full']), str(demo_ckpt['images']),
                       '--out-dir', str(out_dir)])
    assert sorted(os.listdir(out_dir)) == ['img0.png', 'img1.png', 'img2.png']
    assert len(outs) == 3
    text = capsys.readouterr().out
    assert f'3 drawing(s) written to {out_dir}' in text
    from PIL import Image
    drawn = np.asarray(Image.open(out_dir / 'img0.png'))
    assert drawn.shape[1] > 2 * 96  # image | prediction, enlarged to be readable
    # a glob, and the default output folder under work_dirs/infer/
    glob_outs = infer.main([DEMO, str(demo_ckpt['full']), str(demo_ckpt['images'] / 'img1.*'),
                            '--out-dir', str(demo_ckpt['tmp'] / 'glob')])
    assert [osp.basename(p) for p in glob_outs] == ['img1.png']
    assert infer.parse_args([DEMO, str(demo_ckpt['full']), str(demo_ckpt['images'])]).out_dir \
        == osp.join('work_dirs', 'infer', osp.splitext(osp.basename(DEMO))[0])


def test_infer_loads_strictly(demo_ckpt, capsys):
    infer = _load(INFER, 'infer_strict')
    out = demo_ckpt['tmp'] / 'strict.png'
    img = str(demo_ckpt['images'] / 'img0.jpg')
    with pytest.raises(SystemExit) as exc:
        infer.main([DEMO, str(demo_ckpt['partial']), img, '--out-file', str(out)])
    msg = str(exc.value.code)
    assert 'does not match the model' in msg and 'decode_head.conv_seg.weight' in msg
    assert '--non-strict' in msg and not out.exists()
    infer.main([DEMO, str(demo_ckpt['partial']), img, '--out-file', str(out), '--non-strict'])
    assert out.is_file()


def _parse_error(argv, capsys):
    infer = _load(INFER, 'infer_errors')
    with pytest.raises(SystemExit) as exc:
        infer.parse_args(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_infer_bad_inputs_are_named_before_anything_loads(demo_ckpt, tmp_path, capsys):
    ckpt, img = str(demo_ckpt['full']), str(demo_ckpt['images'] / 'img0.jpg')
    err = _parse_error([DEMO, ckpt, img, '--out-file', str(tmp_path / 'x.pdf')], capsys)
    assert 'unknown image extension .pdf' in err
    err = _parse_error([DEMO, str(tmp_path), img], capsys)
    assert f'checkpoint {tmp_path} is a directory' in err
    empty = tmp_path / 'empty'
    empty.mkdir()
    err = _parse_error([DEMO, ckpt, str(empty)], capsys)
    assert f'{empty} is a directory with no images' in err
    err = _parse_error([DEMO, ckpt, str(tmp_path / 'nope.jpg')], capsys)
    assert 'image not found' in err
    err = _parse_error([DEMO, ckpt, str(demo_ckpt['images']), '--out-file',
                        str(tmp_path / 'one.png')], capsys)
    assert 'the inputs hold 3 images' in err


def test_infer_names_tiny_and_huge_images(demo_ckpt, tmp_path, capsys):
    ckpt = str(demo_ckpt['full'])
    for w, h in ((1, 1), (2000, 1)):
        path = tmp_path / f'{w}x{h}.png'
        _write_image(path, w, h)
        err = _parse_error([DEMO, ckpt, str(path)], capsys)
        assert f'{path}: {w} x {h} is too small' in err
    path = tmp_path / 'large.png'
    _write_image(path, 300, 200)
    err = _parse_error([DEMO, ckpt, str(path), '--max-pixels', '50000'], capsys)
    assert f'{path}: 300 x 200 = 60000 pixels is more than --max-pixels 50000' in err


def test_infer_names_an_image_the_model_cannot_take(demo_ckpt, tmp_path, capsys):
    """2000 x 3: the demo's test resize leaves one row of tokens, which the pyramid cannot
    pool; the error names the image and its size, and the other images are still drawn."""
    infer = _load(INFER, 'infer_thin')
    thin, small = tmp_path / 'thin.png', tmp_path / 'small.png'
    _write_image(thin, 2000, 3)
    _write_image(small, 3, 3)
    with pytest.raises(SystemExit) as exc:
        infer.main([DEMO, str(demo_ckpt['full']), str(thin), str(small),
                    '--out-dir', str(tmp_path / 'out')])
    assert str(thin) in str(exc.value.code)
    err = capsys.readouterr().err
    assert f'{thin}: the 2000 x 3 image failed in the model' in err
    assert 'aspect ratio' in err
    assert os.listdir(tmp_path / 'out') == ['small.png']


# --------------------------------------------------------------------------- drawings
def test_drawing_has_titles_and_a_legend_of_the_classes_shown():
    from tools._drawing import draw_segmentation, legend
    img = np.zeros((128, 128, 3), np.uint8)
    pred = np.zeros((128, 128), np.int64)
    pred[:, 64:] = 2
    palette = [[128, 128, 128], [230, 25, 75], [60, 180, 75], [255, 225, 25]]
    classes = ['background', 'stripes', 'checker', 'dots']
    drawn = draw_segmentation(img, pred, classes, palette, gt=pred)
    assert drawn.shape[1] >= 3 * 256  # three panels, enlarged from 128 px
    assert drawn.shape[0] > 256       # titles above, legend below
    below = drawn[-legend(classes, palette, drawn.shape[1], [0, 2]).shape[0]:]
    colours = {tuple(c) for c in below.reshape(-1, 3)}
    assert (60, 180, 75) in colours and (128, 128, 128) in colours   # classes shown
    assert (230, 25, 75) not in colours                             # a class not shown
    big = draw_segmentation(np.zeros((3000, 2000, 3), np.uint8), np.zeros((3000, 2000), np.int64),
                            classes, palette)
    # large results are drawn at reduced resolution: 1024 px on the long side of each panel
    assert big.shape[0] < 1024 + 100 and big.shape[1] < 2 * 683 + 10


# --------------------------------------------------------------------------- quiet terminal
def test_startup_report_goes_to_the_log_file_only(tmp_path, capsys):
    from mmengine.logging import MMLogger

    from tools._quiet import quiet_upstream_warnings
    quiet_upstream_warnings()
    log_file = tmp_path / 'run.log'
    logger = MMLogger.get_instance('quiet_test', log_file=str(log_file))
    logger.info('Config:\nmodel = dict(type="X")')
    logger.info('Hooks will be executed in the following order:\nbefore_run: ...')
    logger.warning('"FileClient" will be deprecated in future. Please use io functions')
    logger.info('Iter(train) [1/4]')
    for h in logger.handlers:
        h.flush()
    out = capsys.readouterr().out
    assert 'Iter(train) [1/4]' in out and 'Config:' not in out and 'FileClient' not in out
    assert f'in the log file {log_file}' in out
    text = log_file.read_text()
    assert 'model = dict(type="X")' in text and 'Hooks will be executed' in text


# --------------------------------------------------------------------------- launchers, make
def test_torchrun_names_a_failed_torch_import(tmp_path):
    fake = tmp_path / 'python'
    fake.write_text("#!/bin/sh\necho \"ModuleNotFoundError: No module named 'torch'\" >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    res = _run(['bash', osp.join(ROOT, 'tools', 'dist_train.sh'), DEMO, '2'],
               PYTHON=str(fake))
    assert res.returncode == 2
    assert "No module named 'torch'" in res.stderr and 'source .venv/bin/activate' in res.stderr
    assert 'GPUs on this node' not in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='without CUDA only')
def test_gpu_refusal_mentions_cpu_processes():
    res = _run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), DEMO, 'x.pth', '2'])
    assert res.returncode == 2 and 'ALLOW_CPU_PROCESSES=1' in res.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='without CUDA only')
def test_amp_on_the_cpu_says_it_is_for_gpus(tmp_path, capsys):
    train = _load(osp.join(ROOT, 'tools', 'train.py'), 'train_amp')
    with pytest.raises(SystemExit) as exc:
        train.main([DEMO, '--amp', '--work-dir', str(tmp_path)])
    assert exc.value.code == 2
    assert '--amp' in capsys.readouterr().err


@pytest.mark.skipif(subprocess.run(['sh', '-c', 'command -v nvidia-smi'],
                                   capture_output=True).returncode == 0,
                    reason='nvidia-smi present')
def test_gpu_check_without_gpu_says_so_and_writes_nothing(tmp_path):
    out = tmp_path / 'gpu_check'
    res = _run(['bash', osp.join(ROOT, 'tools', 'analysis', 'gpu_check.sh'), str(out)])
    assert res.returncode == 2 and 'no GPU' in res.stderr
    assert not out.exists()


def test_makefile_phony_targets_have_rules_and_tests_say_why_skipped():
    text = open(osp.join(ROOT, 'Makefile')).read()
    phony = re.search(r'^\.PHONY:(.*)$', text, re.M).group(1).split()
    for target in phony:
        assert re.search(rf'^{re.escape(target)}:', text, re.M), target
    assert re.search(r'^test:.*\n\t.*pytest.*-rs', text, re.M)
    readme = open(osp.join(ROOT, 'README.md')).read()
    assert 'make test-fast' in readme and 'source .venv/bin/activate' in readme


# --------------------------------------------------------------------------- end to end
SWAP_TINY = osp.join(ROOT, 'configs', 'demo',
                     'upernet_intern-vit-tiny-swap_1xb4-200_synthetic-112x112.py')


def _tiny_demo_data(root, num_val=3):
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    make_dataset(str(root), 4, num_val, 128, 4, 0)


@pytest.fixture(scope='module')
def demo_data(tmp_path_factory, demo_ckpt):
    root = tmp_path_factory.mktemp('demo_data') / 'synthetic_ade'
    _tiny_demo_data(root)
    return root


def _data_options(root):
    return [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.mark.slow
def test_show_dir_draws_every_test_image_and_test_says_where(demo_ckpt, demo_data, tmp_path):
    show, pred = tmp_path / 'show', tmp_path / 'pred'
    res = _run([sys.executable, TEST, DEMO, str(demo_ckpt['full']), '--work-dir',
                str(tmp_path / 'work'), '--show-dir', str(show), '--out', str(pred),
                '--cfg-options', f'test_dataloader.dataset.data_root={demo_data}'])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    names = sorted(os.listdir(demo_data / 'images' / 'validation'))
    assert sorted(os.listdir(show)) == sorted(n[:-4] + '.png' for n in names)  # all 3, no subdir
    assert f'--show-dir: 3 pictures written to {show}' in res.stdout
    assert f'--out: predicted label maps written to {pred} (3 files)' in res.stdout
    assert 'Config:' not in res.stdout and 'in the log file' in res.stdout
    assert 'Setting accelerator' not in res.stdout + res.stderr  # DeepSpeed's, without a GPU


@pytest.mark.slow
def test_tta_on_the_demo_config_prints_an_miou(demo_ckpt, demo_data, tmp_path):
    res = _run([sys.executable, TEST, DEMO, str(demo_ckpt['full']), '--tta', '--work-dir',
                str(tmp_path / 'work'), '--cfg-options', *_data_options(demo_data)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r'mIoU: [\d.]+', res.stdout + res.stderr)


def _port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return str(s.getsockname()[1])


@pytest.mark.slow
def test_dist_test_on_cpu_processes_prints_an_miou(demo_ckpt, demo_data, tmp_path):
    res = _run(['bash', osp.join(ROOT, 'tools', 'dist_test.sh'), DEMO, str(demo_ckpt['full']),
                '2', '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                *_data_options(demo_data)],
               ALLOW_CPU_PROCESSES='1', PORT=_port(), DS_ACCELERATOR='cpu')
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    out = res.stdout + res.stderr
    assert re.search(r'mIoU: [\d.]+', out)
    assert out.count('`reduce_zero_label` will be deprecated') == 0


@pytest.mark.slow
def test_tiny_swap_example_trains_on_the_synthetic_data(demo_data, tmp_path):
    """The README's one-line swap trial (mmseg's UPerNet base, SGD schedule and runtime with a
    tiny InternViT), shortened to 4 iterations: trains, validates, prints an mIoU."""
    res = _run([sys.executable, osp.join(ROOT, 'tools', 'train.py'), SWAP_TINY, '--work-dir',
                str(tmp_path / 'work'), '--cfg-options', 'train_cfg.max_iters=4',
                'train_cfg.val_interval=4', *_data_options(demo_data)])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert re.search(r'mIoU: [\d.]+', res.stdout + res.stderr)
