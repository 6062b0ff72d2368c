"""Swapping InternViT into a config that ships with mmseg (configs/segmentation/swap_examples).

The config inherits ``mmseg::upernet/upernet_r50_4xb4-80k_ade20k-512x512.py`` and replaces the
ResNet-50 by InternViT-300M + SimpleFeaturePyramid. Here it is built with a tiny InternViT of the
same depth and trained for one iteration through MMEngine's Runner on synthetic ADE20K-format
data (see configs/segmentation/README.md, "Swapping InternViT into any mmseg config").
"""
import copy
import os.path as osp

import torch
from mmengine.config import Config
from mmengine.runner import Runner

from ._tiny import tiny_model_cfg

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SWAP = osp.join(ROOT, 'configs', 'segmentation', 'swap_examples',
                'upernet_intern-vit-300m_4xb4-80k_ade20k-512x512.py')
CROP = (112, 112)


def test_inherits_mmseg_and_swaps_only_the_backbone():
    cfg = Config.fromfile(SWAP)
    assert cfg.model.backbone.type == 'InternViT' and cfg.model.backbone.arch == '300m'
    assert 'depth' not in cfg.model.backbone  # _delete_ dropped every ResNet key
    assert cfg.model.pretrained is None
    assert cfg.model.neck.type == 'SimpleFeaturePyramid'
    assert cfg.model.decode_head.in_channels == [1024] * 4
    assert cfg.model.auxiliary_head.in_channels == 1024
    # Everything else is mmseg's R-50 recipe.
    assert cfg.model.decode_head.type == 'UPerHead' and cfg.model.decode_head.channels == 512
    assert cfg.optim_wrapper.optimizer.type == 'SGD'
    assert cfg.train_cfg.max_iters == 80000
    assert cfg.train_dataloader.dataset.type == 'ADE20KDataset'


def test_builds_and_trains_one_iteration(tmp_path, synthetic_ade):
    cfg = Config.fromfile(SWAP)
    cfg.model = tiny_model_cfg(cfg)
    cfg.model.data_preprocessor.size = CROP
    cfg.work_dir = str(tmp_path / 'work')
    cfg.launcher = 'none'
    train = cfg.train_dataloader
    train.batch_size = 2
    train.num_workers = 0
    train.persistent_workers = False
    train.dataset.data_root = str(synthetic_ade)
    for t in train.dataset.pipeline:  # 112 crops instead of 512 to keep the CPU step short
        if t['type'] == 'RandomResize':
            t['scale'] = (448, 112)
        elif t['type'] == 'RandomCrop':
            t['crop_size'] = CROP
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1000)
    for key in ('val_dataloader', 'val_cfg', 'val_evaluator', 'test_dataloader', 'test_cfg',
                'test_evaluator'):
        cfg[key] = None
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', interval=1000)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))

    runner = Runner.from_cfg(cfg)
    before = copy.deepcopy(runner.model.backbone.state_dict())
    runner.train()
    assert runner.iter == 1
    after = runner.model.backbone.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the backbone learned
    loss = runner.message_hub.get_scalar('train/loss').current()
    assert loss == loss and loss > 0  # finite, not NaN
