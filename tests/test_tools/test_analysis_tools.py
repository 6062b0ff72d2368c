"""The analysis tools an mmseg user expects (analyze_logs, confusion_matrix, browse_dataset,
print_config) on the demo's outputs; get_flops / benchmark on a model the machine cannot hold;
memory_plan reading the optimizer and the precision of a config."""
import os
import os.path as osp
import re

import numpy as np
import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(ROOT, 'configs', 'demo', 'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')
SWAP_TINY = osp.join(ROOT, 'configs', 'demo',
                     'upernet_intern-vit-tiny-swap_1xb4-200_synthetic-112x112.py')
SIX_B = osp.join(ROOT, 'configs', 'segmentation', 'intern_vit_6b', 'full_tuning',
                 'upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py')


def _tool(name):
    """tools/<name> as a module (``tools.analysis.memory_plan`` for 'analysis/memory_plan.py')."""
    import importlib
    return importlib.import_module('tools.' + name[:-3].replace('/', '.'))


# --------------------------------------------------------------------------- memory_plan
def test_memory_plan_counts_the_configs_optimizer_and_precision():
    from mmengine.config import Config
    mp = _tool('analysis/memory_plan.py')
    assert mp.optimizer_state_bytes(dict(type='SGD', lr=0.01, momentum=0.9))[1] == 4
    assert mp.optimizer_state_bytes(dict(type='SGD', lr=0.01))[1] == 0
    assert mp.optimizer_state_bytes(dict(type='AdamW'))[1] == 8
    assert 'unknown' in mp.optimizer_state_bytes(dict(type='Shampoo'))[2]

    cfg = Config.fromfile(SWAP_TINY)  # mmseg's SGD (momentum 0.9) schedule, OptimWrapper
    facts, _, _ = mp.facts_from_config(cfg)
    assert (facts.optimizer, facts.optim_state_bytes, facts.amp) == ('SGD', 4, False)
    plan = mp.plan(facts, 'ddp', 1)
    assert plan.optim == 4 * facts.trainable
    assert plan.weights == 4 * facts.trainable + facts.frozen_bytes * facts.frozen  # no copies
    assert plan.act_nocp == facts.num_blocks * facts.block_act['fp32'] + facts.other_act['fp32']
    zero1 = mp.plan(facts, 'zero1', 2)
    assert zero1.optim == (4 + 4) * facts.trainable / 2  # master copy + momentum

    cfg.optim_wrapper.type = 'AmpOptimWrapper'
    cfg.optim_wrapper.optimizer = dict(type='AdamW', lr=1e-4)
    amp, _, _ = mp.facts_from_config(cfg)
    amp_plan = mp.plan(amp, 'ddp', 1)
    assert amp_plan.optim == 8 * amp.trainable
    assert amp_plan.weights == 6 * amp.trainable + amp.frozen_bytes * amp.frozen
    # float32 activations are larger than bf16-autocast ones
    assert plan.act_nocp > amp_plan.act_nocp


def test_memory_plan_cli_names_optimizer_and_precision(capsys):
    mp = _tool('analysis/memory_plan.py')
    text = mp.main([SWAP_TINY, '--gpus', '1', '--strategy', 'ddp'])
    assert 'optimizer: SGD, 4 B of float32 state' in text
    assert 'DDP (float32)' in text
    assert 'ddp and fsdp1_full_shard run float32, no autocast (OptimWrapper)' in text


# --------------------------------------------------------------------------- 6B, small machine
def test_get_flops_6b_without_meta_does_not_allocate_it(monkeypatch, capsys):
    """With 8 GiB free (the 6B model needs about 24 GiB), get_flops counts on the meta device
    instead of building the model in memory, and prints the parameter count."""
    monkeypatch.setenv('INTERNVIT_FREE_MEMORY_GIB', '8')
    gf = _tool('analysis/get_flops.py')
    built = []
    real_fvcore = gf.fvcore_macs
    monkeypatch.setattr(gf, 'fvcore_macs', lambda *a: built.append(1) or real_fvcore(*a))
    gf.main([SIX_B])
    out = capsys.readouterr().out
    assert 'GiB are free: counting on the meta device' in out
    assert '16.338' in out and 'counted/analytic = 1.0000' in out
    assert re.search(r'params 6\.\d{3} B \(6\.\d{3} B trainable\)', out)  # + heads
    assert 'Setting accelerator' not in out
    assert not built


def test_benchmark_6b_stops_with_both_numbers(monkeypatch):
    monkeypatch.setenv('INTERNVIT_FREE_MEMORY_GIB', '8')
    bench = _tool('analysis/benchmark.py')
    with pytest.raises(SystemExit) as exc:
        bench.main([SIX_B, '--device', 'cpu', '--threads', '1'])
    msg = str(exc.value.code)
    assert 'GiB for its weights alone' in msg and 'has 8.0 GiB free' in msg


def test_get_flops_prints_params_of_the_demo(capsys):
    gf = _tool('analysis/get_flops.py')
    gf.main([DEMO, '--shape', '56'])
    out = capsys.readouterr().out
    assert 'params 0.' in out and 'trainable' in out and 'neck + heads' in out


# --------------------------------------------------------------------------- print_config
def test_print_config_resolves_bases_and_options(tmp_path, capsys):
    pc = _tool('misc/print_config.py')
    save = tmp_path / 'resolved.py'
    text = pc.main([DEMO, '--cfg-options', 'train_cfg.max_iters=7', '--save-path', str(save)])
    assert "type='InternViT'" in text and 'max_iters=7' in text
    from mmengine.config import Config
    assert Config.fromfile(str(save)).train_cfg.max_iters == 7


# --------------------------------------------------------------------------- demo outputs
@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """tools/demo.py shortened (4 iterations, 8 training and 3 validation images), then
    tools/test.py --out on its checkpoint."""
    import subprocess
    import sys
    tmp = tmp_path_factory.mktemp('demo_outputs')
    data, work = tmp / 'data', tmp / 'work'
    # separate processes: MMEngine's visualizer and logger are process-wide singletons that
    # an earlier test of the session may have created with another save_dir
    def run(*args):
        res = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                             text=True, timeout=900)
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    run(osp.join(ROOT, 'tools', 'demo.py'), '--work-dir', work, '--data-root', data,
        '--iters', '4', '--num-train', '8', '--num-val', '3', '--num-vis', '1', '--threads', '1')
    pred = tmp / 'pred'
    opts = [f'{k}.dataset.data_root={data}'
            for k in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    run(osp.join(ROOT, 'tools', 'test.py'), DEMO, work / 'iter_4.pth', '--work-dir', work,
        '--out', pred, '--cfg-options', *opts)
    return dict(tmp=tmp, data=data, work=work, pred=pred, opts=opts)


@pytest.mark.slow
def test_demo_overlays_have_titles_and_legend(demo_run):
    from PIL import Image
    vis = demo_run['work'] / 'vis'
    (name,) = os.listdir(vis)
    drawn = np.asarray(Image.open(vis / name))
    assert drawn.shape[1] >= 3 * 256 and drawn.shape[0] > 256 + 20  # titles + legend rows


@pytest.mark.slow
def test_analyze_logs_writes_curves_from_the_demo_run(demo_run, capsys):
    al = _tool('analysis/analyze_logs.py')
    out = demo_run['tmp'] / 'curves.png'
    drawn = al.main([str(demo_run['work']), '--keys', 'loss', 'lr', 'mIoU', '--out', str(out)])
    assert drawn == ['loss', 'lr', 'mIoU']
    from PIL import Image
    assert Image.open(out).size[1] > Image.open(out).size[0] / 2  # three panels
    with pytest.raises(SystemExit, match='none of the keys'):
        al.main([str(demo_run['work']), '--keys', 'nonsense', '--out', str(out)])


@pytest.mark.slow
def test_confusion_matrix_from_test_out(demo_run, capsys):
    cm = _tool('analysis/confusion_matrix.py')
    out = demo_run['tmp'] / 'cm.png'
    matrix = cm.main([DEMO, str(demo_run['pred']), '--out', str(out), '--cfg-options',
                      *demo_run['opts']])
    assert matrix.shape == (4, 4) and out.is_file()
    # every labelled pixel of the 3 validation images is counted once
    from PIL import Image
    ann = demo_run['data'] / 'annotations' / 'validation'
    labelled = sum(int((np.asarray(Image.open(ann / f)) > 0).sum()) for f in os.listdir(ann))
    assert matrix.sum() == labelled
    assert 'confusion matrix of 3 images' in capsys.readouterr().out


@pytest.mark.slow
def test_browse_dataset_draws_pipeline_output(demo_run, capsys):
    bd = _tool('analysis/browse_dataset.py')
    out_dir = demo_run['tmp'] / 'browse'
    written = bd.main([DEMO, '--num', '2', '--out-dir', str(out_dir), '--cfg-options',
                       *demo_run['opts']])
    assert len(written) == 2 and all(osp.isfile(p) for p in written)
    from PIL import Image
    w, h = Image.open(written[0]).size
    assert w >= 2 * 224  # two enlarged 112 px crops side by side
