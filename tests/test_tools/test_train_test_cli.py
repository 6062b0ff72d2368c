"""tools/train.py and tools/test.py: command-line contract, and (slow) a tiny mmseg run
through both, with resumption."""
import argparse
import glob
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
from mmengine.config import Config

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')


def _load(path):
    spec = importlib.util.spec_from_file_location(osp.splitext(osp.basename(path))[0] + '_cli',
                                                  path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _popen(*args):
    return subprocess.Popen([sys.executable, *map(str, args)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_missing_config_exits_2_naming_it(tmp_path):
    missing = tmp_path / 'no_such_config.py'
    ckpt = tmp_path / 'model.pth'
    torch.save({}, ckpt)
    procs = [_popen(TRAIN, missing), _popen(TEST, missing, ckpt)]  # run side by side
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 2, (out, err)
        assert f'config file not found: {missing}' in err


def test_test_missing_checkpoint(tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmseg'\n")
    with pytest.raises(SystemExit) as exc:
        _load(TEST).main([str(config), str(tmp_path / 'nope.pth')])
    assert exc.value.code == 2
    assert f'checkpoint not found: {tmp_path / "nope.pth"}' in capsys.readouterr().err


def test_train_resume_path_must_exist(tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmseg'\n")
    with pytest.raises(SystemExit) as exc:
        _load(TRAIN).main([str(config), '--resume', str(tmp_path / 'nope.pth')])
    assert exc.value.code == 2
    assert 'nope.pth' in capsys.readouterr().err


def test_train_resume_auto_and_path():
    parse = _load(TRAIN).parse_args
    assert parse([TRAIN, '--resume'])[1].resume == 'auto'
    assert parse([TRAIN])[1].resume is None
    assert parse([TRAIN, '--resume', TEST])[1].resume == TEST


def test_unknown_scope_is_refused(tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmpretrain'\n")
    cli = _load(TRAIN)
    parser, _ = cli.parse_args([str(config)])
    with pytest.raises(SystemExit) as exc:
        cli.register_toolbox(Config.fromfile(str(config)), str(config), parser)
    assert exc.value.code == 2
    assert f"{config}: default_scope must be one of ('mmseg', 'mmdet'), got 'mmpretrain'" \
        in capsys.readouterr().err


def test_tta_without_tta_model_names_config(capsys):
    cfg = Config(dict(model=dict(type='EncoderDecoder'),
                      test_dataloader=dict(dataset=dict(pipeline=[]))))
    with pytest.raises(SystemExit) as exc:
        _load(TEST).enable_tta(cfg, 'configs/x.py', 'mmseg', argparse.ArgumentParser())
    assert exc.value.code == 2
    assert '--tta: configs/x.py has no tta_model and no tta_pipeline' in capsys.readouterr().err


def test_tta_switches_model_and_pipeline():
    cfg = Config(dict(model=dict(type='EncoderDecoder'),
                      tta_model=dict(type='SegTTAModel'), tta_pipeline=[dict(type='TTA')],
                      test_dataloader=dict(dataset=dict(type='RepeatDataset', dataset=dict(
                          pipeline=[dict(type='Plain')])))))
    _load(TEST).enable_tta(cfg, 'x.py', 'mmseg', argparse.ArgumentParser())
    assert cfg.model.type == 'SegTTAModel' and cfg.model.module.type == 'EncoderDecoder'
    assert cfg.test_dataloader.dataset.dataset.pipeline == [dict(type='TTA')]


def test_amp_switches_optim_wrapper():
    cli = _load(TRAIN)
    cfg = Config(dict(optim_wrapper=dict(type='OptimWrapper', optimizer=dict(type='SGD'))))
    cli.enable_amp(cfg, 'x.py', argparse.ArgumentParser())
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'


def test_safe_hook_added_once():
    cli = _load(TRAIN)
    cfg = Config(dict(custom_hooks=[dict(type='EMAHook')]))
    cli.add_safe_checkpoint_hook(cfg)
    cli.add_safe_checkpoint_hook(cfg)
    assert [h['type'] for h in cfg.custom_hooks] == ['EMAHook', 'SafeCheckpointStateHook']


def test_shell_wrappers_are_executable():
    for name in ('dist_train.sh', 'dist_test.sh', 'slurm_train.sh', 'slurm_test.sh'):
        path = osp.join(ROOT, 'tools', name)
        assert os.access(path, os.X_OK), path
        assert subprocess.run(['bash', '-n', path]).returncode == 0
        usage = subprocess.run(['bash', path], capture_output=True, text=True)
        assert usage.returncode == 2 and 'usage:' in usage.stderr


# --------------------------------------------------------------------------- end to end
CLASSES = ('background', 'disc', 'square')

TINY_SEG_CONFIG = '''
custom_imports = dict(imports=['backbones'], allow_failed_imports=False)
default_scope = 'mmseg'
data_root = {data_root!r}
crop_size = (56, 56)
metainfo = dict(classes={classes!r}, palette=[[0, 0, 0], [255, 0, 0], [0, 0, 255]])
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[64.0] * 3,
                           bgr_to_rgb=True, pad_val=0, seg_pad_val=255, size=crop_size),
    backbone=dict(
        type='InternViT',
        arch=dict(embed_dims=64, num_layers=2, num_heads=2, mlp_ratio=2.0,
                  norm_type='rms_norm', qk_norm=True, qkv_bias=False, layer_scale_init=0.1),
        img_size=56, patch_size=14, out_indices=[1]),
    decode_head=dict(type='FCNHead', in_channels=64, in_index=0, channels=32, num_convs=1,
                     concat_input=False, dropout_ratio=0.0, num_classes=3, norm_cfg=norm_cfg,
                     align_corners=False,
                     loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False,
                                      loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'))
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=0.0, direction='horizontal'),
         dict(type='RandomFlip', prob=1.0, direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]


def dataset(split, pipeline):
    return dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
                img_suffix='.png', seg_map_suffix='.png', pipeline=pipeline,
                data_prefix=dict(img_path='img_dir/' + split, seg_map_path='ann_dir/' + split))


train_dataloader = dict(batch_size=2, num_workers=0,
                        sampler=dict(type='InfiniteSampler', shuffle=True),
                        dataset=dataset('train', train_pipeline))
val_dataloader = dict(batch_size=1, num_workers=0,
                      sampler=dict(type='DefaultSampler', shuffle=False),
                      dataset=dataset('val', test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
optim_wrapper = dict(type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.0))
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=8, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4, val_interval=1000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=1, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=2),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
               dist_cfg=dict(backend='gloo'))
visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                  name='visualizer')
log_processor = dict(by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0)
'''


def _write_synthetic(root, split, n, seed):
    """Grey images with a textured disc (class 1) and square (class 2) at random places."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    os.makedirs(osp.join(root, 'img_dir', split))
    os.makedirs(osp.join(root, 'ann_dir', split))
    yy, xx = np.mgrid[:56, :56]
    for i in range(n):
        img = np.full((56, 56, 3), 128, np.uint8) + rng.integers(0, 20, (56, 56, 3), np.uint8)
        ann = np.zeros((56, 56), np.uint8)
        cy, cx = rng.integers(14, 42, 2)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < 100
        ann[disc], img[disc] = 1, (220, 60, 60)
        y0, x0 = rng.integers(0, 40, 2)
        ann[y0:y0 + 14, x0:x0 + 14], img[y0:y0 + 14, x0:x0 + 14] = 2, (40, 40, 200)
        Image.fromarray(img).save(osp.join(root, 'img_dir', split, f'{i}.png'))
        Image.fromarray(ann).save(osp.join(root, 'ann_dir', split, f'{i}.png'))


def _run(*args, timeout=600):
    res = subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                         text=True, timeout=timeout)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-5000:]
    return res.stdout + res.stderr


@pytest.mark.slow
def test_train_test_resume_tiny_mmseg(tmp_path):
    pytest.importorskip('mmseg')
    data_root = tmp_path / 'data'
    _write_synthetic(data_root, 'train', 6, seed=0)
    _write_synthetic(data_root, 'val', 2, seed=1)
    config = tmp_path / 'fcn_internvit-tiny_1xb2-4i_synthetic-56x56.py'
    config.write_text(TINY_SEG_CONFIG.format(data_root=str(data_root), classes=CLASSES))
    work_dir = tmp_path / 'work'

    _run(TRAIN, config, '--work-dir', work_dir)
    ckpt = work_dir / 'iter_4.pth'
    assert ckpt.is_file() and (work_dir / 'last_checkpoint').read_text().strip() == str(ckpt)
    # saved through SafeCheckpointStateHook: nothing outside torch's weights-only set
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(ckpt)) == []

    show_dir, out_dir = tmp_path / 'show', tmp_path / 'pred'
    log = _run(TEST, config, ckpt, '--work-dir', work_dir, '--show-dir', show_dir,
               '--out', out_dir,  # the hook paints every 50th image unless told otherwise
               '--cfg-options', 'default_hooks.visualization.interval=1')
    assert 'mIoU' in log and all(c in log for c in CLASSES)  # IoUMetric's per-class table
    assert glob.glob(str(show_dir / '**' / '*.png'), recursive=True)
    assert sorted(os.listdir(out_dir)) == ['0.png', '1.png']

    log = _run(TEST, config, ckpt, '--work-dir', work_dir, '--tta')
    assert 'mIoU' in log

    log = _run(TRAIN, config, '--work-dir', work_dir, '--resume',
               '--cfg-options', 'train_cfg.max_iters=6')
    assert 'resumed epoch: 0, iter: 4' in log
    assert (work_dir / 'iter_6.pth').is_file()
    assert (work_dir / 'last_checkpoint').read_text().strip() == str(work_dir / 'iter_6.pth')


@pytest.mark.skipif(torch.cuda.is_available(), reason='FSDP1 runs where there is CUDA')
def test_fsdp1_without_cuda_is_refused_with_the_alternative(tmp_path, capsys):
    config = tmp_path / 'fsdp1.py'
    config.write_text("_base_ = ['" + osp.join(ROOT, 'configs', '_base_', 'strategies',
                                               'fsdp1_full_shard.py') + "']\nmodel = dict()\n"
                      "default_scope = 'mmseg'\n")
    with pytest.raises(SystemExit) as exc:
        _load(TRAIN).main([str(config), '--work-dir', str(tmp_path / 'w')])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert 'needs CUDA GPUs' in err and '--strategy fsdp2_full_shard' in err
