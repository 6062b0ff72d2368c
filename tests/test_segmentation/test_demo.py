"""`make demo` (tools/demo.py) and its config."""
import os
import os.path as osp

import pytest
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')


def test_demo_config_matches_the_synthetic_dataset():
    from tools.dataset_converters.make_synthetic_ade import class_names
    cfg = Config.fromfile(DEMO)
    names = class_names(4)  # the converter's default
    assert list(cfg.metainfo['classes']) == names
    assert cfg.model.decode_head.num_classes == len(names)
    assert cfg.model.auxiliary_head.num_classes == len(names)
    assert cfg.train_dataloader.dataset.data_root == 'data/synthetic_ade'
    assert cfg.train_dataloader.batch_size == 4
    assert cfg.model.data_preprocessor.size == (112, 112)
    arch = cfg.model.backbone.arch
    assert (arch.embed_dims, arch.num_layers, arch.num_heads) == (64, 4, 4)
    assert cfg.model.neck.type == 'SimpleFeaturePyramid' and cfg.model.neck.norm_cfg.type == 'BN'
    assert cfg.train_cfg.val_interval == cfg.train_cfg.max_iters  # one evaluation, at the end


def test_set_iters_shortens_the_whole_schedule():
    from tools.demo import set_iters
    cfg = Config.fromfile(DEMO)
    set_iters(cfg, 8)
    assert cfg.train_cfg.max_iters == cfg.train_cfg.val_interval == 8
    assert cfg.param_scheduler[0].end == cfg.param_scheduler[1].begin == 2
    assert cfg.param_scheduler[1].end == 8
    assert cfg.default_hooks.checkpoint.interval == 8


def test_threads_leave_a_core_to_the_data_loader(monkeypatch):
    from tools.demo import set_threads
    monkeypatch.delenv('OMP_NUM_THREADS', raising=False)
    assert 1 <= set_threads(None) <= max(1, (os.cpu_count() or 2) - 1)
    assert set_threads(1) == 1


@pytest.mark.slow
def test_demo_trains_evaluates_and_writes_overlays(tmp_path, capsys):
    """The demo end to end, shortened: 10 iterations on 16 synthetic images."""
    from tools.demo import main
    data, work = tmp_path / 'data', tmp_path / 'work'
    metrics = main(['--work-dir', str(work), '--data-root', str(data), '--iters', '10',
                    '--num-train', '16', '--num-val', '4', '--num-vis', '2'])
    out = capsys.readouterr().out
    print(f"demo test: mIoU {metrics['mIoU']:.2f} after 10 iterations")
    assert 0 <= metrics['mIoU'] <= 100
    assert '[demo] mIoU' in out
    assert len(os.listdir(data / 'images' / 'training')) == 16
    assert sorted(os.listdir(work / 'vis')) == ['synth_validation_00000.png',
                                                'synth_validation_00001.png']
    assert osp.isfile(work / 'iter_10.pth')


@pytest.mark.parametrize('name', [
    'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py',
    'upernet_intern-vit-tiny-adapter_1xb4-100_synthetic-112x112.py'])
def test_demo_heads_predict_the_dataset_classes(name):
    """Every head of a segmentation demo has one output per class of the synthetic dataset."""
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'demo', name))
    classes = cfg.train_dataloader.dataset.metainfo['classes']
    aux = cfg.model.get('auxiliary_head') or []
    heads = [cfg.model.decode_head] + (list(aux) if isinstance(aux, list) else [aux])
    for head in heads:
        assert head.num_classes == len(classes), (name, head.type)
