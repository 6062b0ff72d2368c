"""The demo Mask R-CNN config trains on the synthetic COCO data, tools/test.py evaluates it
(bbox and segm AP), and tools/infer.py draws predictions of detectors and segmentors."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

from ._tiny import DEMO_CONFIG, ROOT

SEG_DEMO_CONFIG = osp.join(ROOT, 'configs', 'demo',
                           'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')


def _run(args, cwd, timeout=900):
    # One intra-op thread: the models are tiny, and on a busy machine spin-waiting threads
    # make them many times slower.
    proc = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, OMP_NUM_THREADS='1'))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    return out


def _random_checkpoint(config_path, scope, path, dataset_meta):
    """Save the freshly initialised model of a config as an MMEngine-style checkpoint."""
    from importlib import import_module

    from mmengine.registry import DefaultScope
    cfg = Config.fromfile(config_path)
    import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    with DefaultScope.overwrite_default_scope(scope):
        model = import_module(f'{scope}.registry').MODELS.build(cfg.model)
    model.init_weights()
    torch.save(dict(state_dict=model.state_dict(), meta=dict(dataset_meta=dataset_meta)), path)


@pytest.fixture
def workdir_with_data(tmp_path, coco_maker):
    """A working directory with the demo's data_root (data/synthetic_coco) in it."""
    coco_maker.make_dataset(str(tmp_path / 'data' / 'synthetic_coco'), num_train=8, num_val=4,
                            size=128, seed=0)
    return tmp_path


def test_demo_config_reads_the_synthetic_dataset(coco_maker):
    cfg = Config.fromfile(DEMO_CONFIG)
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic_coco/'
    assert tuple(cfg.metainfo['classes']) == coco_maker.CLASSES
    assert cfg.model.roi_head.bbox_head.num_classes == len(coco_maker.CLASSES)
    assert cfg.model.backbone.arch['embed_dims'] == 64
    assert cfg.train_cfg.max_iters == 300 and cfg.train_dataloader.batch_size == 2


def test_infer_draws_detections(workdir_with_data, coco_maker):
    ckpt = workdir_with_data / 'random_det.pth'
    _random_checkpoint(DEMO_CONFIG, 'mmdet', ckpt, dict(classes=coco_maker.CLASSES,
                                                        palette=list(coco_maker.PALETTE)))
    image = workdir_with_data / 'data' / 'synthetic_coco' / 'val' / 'synth_val_00000.jpg'
    out_file = workdir_with_data / 'vis' / 'det.png'
    out = _run([osp.join(ROOT, 'tools', 'infer.py'), DEMO_CONFIG, str(ckpt), str(image),
                '--out-file', str(out_file), '--score-thr', '0.0'], cwd=workdir_with_data)
    assert 'drawn to' in out
    from PIL import Image
    assert Image.open(out_file).size == (128, 128)


def test_infer_draws_segmentation(tmp_path):
    ckpt = tmp_path / 'random_seg.pth'
    _random_checkpoint(SEG_DEMO_CONFIG, 'mmseg', ckpt, dict(
        classes=['background', 'a', 'b', 'c', 'd'],
        palette=[[128, 128, 128], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]]))
    image = tmp_path / 'img.jpg'
    from PIL import Image
    Image.new('RGB', (112, 96), (90, 120, 150)).save(image)
    out_file = tmp_path / 'seg.png'
    out = _run([osp.join(ROOT, 'tools', 'infer.py'), SEG_DEMO_CONFIG, str(ckpt), str(image),
                '--out-file', str(out_file)], cwd=tmp_path)
    assert 'overlay written' in out
    w, h = Image.open(out_file).size  # image | prediction, enlarged, titles and a legend
    assert w > 2 * 112 and h > 2 * 96


@pytest.mark.slow
def test_demo_trains_and_tools_test_reports_coco_ap(workdir_with_data):
    iters = 6
    work = workdir_with_data / 'work'
    opts = ['--cfg-options', f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
            f'default_hooks.checkpoint.interval={iters}']
    out = _run([osp.join(ROOT, 'tools', 'train.py'), DEMO_CONFIG, '--work-dir', str(work), *opts],
               cwd=workdir_with_data)
    assert re.search(r'loss_mask: \d', out), out[-3000:]
    ckpt = work / f'iter_{iters}.pth'
    assert ckpt.is_file()

    if osp.isfile(osp.join(ROOT, 'tools', 'test.py')):
        out = _run([osp.join(ROOT, 'tools', 'test.py'), DEMO_CONFIG, str(ckpt), '--work-dir',
                    str(workdir_with_data / 'test')], cwd=workdir_with_data)
    else:  # pragma: no cover - tools/test.py is part of the toolkit
        pytest.fail('tools/test.py is missing')
    for metric in ('coco/bbox_mAP', 'coco/segm_mAP'):
        m = re.search(metric + r': (-?[\d.]+)', out)
        assert m, out[-3000:]
        assert -1.0 <= float(m.group(1)) <= 1.0
    print(re.findall(r'coco/(?:bbox|segm)_mAP: -?[\d.]+', out))
