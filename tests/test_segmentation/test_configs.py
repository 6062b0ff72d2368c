"""Every segmentation config: builds, trains a step and predicts with a tiny backbone, its
pipelines run, and its recipe matches DESIGN.md ("Reference recipes")."""
import copy
import functools
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmseg.registry import DATASETS, MODELS

from backbones.intern_vit import resolve_arch

from ._tiny import IMG, batch, cpu_optim_wrapper_cfg, tiny_model_cfg

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = osp.join(ROOT, 'configs', 'segmentation')
# vit_adapter/ folders belong to the ViT-Adapter configs and have their own tests.
CONFIGS = sorted(p for p in glob.glob(osp.join(SEG, '**', '*.py'), recursive=True)
                 if f'{osp.sep}vit_adapter{osp.sep}' not in p)
# 6B: linear/head/full x (ADE20K, COCO-Stuff) + 5 few-shot = 11; 448px: 4 weights x 3 x (ADE20K,
# COCO-Stuff) = 24;
# 300M: 3; the mmseg swap example: 1.
NUM_CONFIGS = 39


def _rel(path):
    return osp.relpath(path, SEG)


@functools.lru_cache(maxsize=None)
def _parse(path):
    return Config.fromfile(path)


def load(path):
    """A fresh copy of the parsed config (parsing is cached: it takes seconds)."""
    return copy.deepcopy(_parse(path))


def test_number_of_configs():
    assert len(CONFIGS) == NUM_CONFIGS, [_rel(p) for p in CONFIGS]


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_model_trains_a_step_and_predicts(path):
    cfg = load(path)
    init_default_scope('mmseg')
    model = MODELS.build(tiny_model_cfg(cfg))
    num_classes = model.decode_head.num_classes
    optim_wrapper = build_optim_wrapper(model, cpu_optim_wrapper_cfg(cfg))
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    in_optimizer = {id(p) for g in optim_wrapper.optimizer.param_groups for p in g['params']}
    assert trainable <= in_optimizer

    model.train()
    data = model.data_preprocessor(batch(num_classes), True)
    loss, log_vars = model.parse_losses(model(**data, mode='loss'))
    assert torch.isfinite(loss)
    optim_wrapper.backward(loss)
    if cfg.model.backbone.get('frozen'):
        assert not any(p.requires_grad for p in model.backbone.parameters())
    else:
        assert all(p.grad is not None for p in model.backbone.parameters())
    optim_wrapper.step()
    optim_wrapper.zero_grad()

    model.eval()
    preds = model.test_step(batch(num_classes, n=1))
    assert preds[0].pred_sem_seg.data.shape == (1, IMG, IMG)


# --------------------------------------------------------------------------- pipelines
def _reduce_zero_label(pipeline):
    for t in pipeline:
        if t['type'] == 'LoadAnnotations':
            return bool(t.get('reduce_zero_label', False))
    return False


@pytest.mark.parametrize('path', CONFIGS, ids=_rel)
def test_pipelines_run(path, synthetic_ade):
    cfg = load(path)
    init_default_scope('mmseg')
    crop = cfg.model.data_preprocessor.size
    name = 'synth_training_00000'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        dataset = cfg[loader].dataset
        assert DATASETS.get(dataset.type) is not None, dataset.type
        pipeline = Compose(copy.deepcopy(dataset.pipeline))
        split = 'training' if loader == 'train_dataloader' else 'validation'
        stem = name.replace('training', split)
        out = pipeline(dict(
            img_path=str(synthetic_ade / 'images' / split / f'{stem}.jpg'),
            seg_map_path=str(synthetic_ade / 'annotations' / split / f'{stem}.png'),
            reduce_zero_label=_reduce_zero_label(dataset.pipeline), seg_fields=[]))
        img = out['inputs']
        gt = out['data_samples'].gt_sem_seg.data
        if loader == 'train_dataloader':
            assert img.shape[1] <= crop[0] and img.shape[2] <= crop[1]
            assert gt.shape[1:] == img.shape[1:]
        else:
            # Short side resized to the crop (keep ratio); ground truth at the original size.
            assert min(img.shape[1:]) >= min(crop)
            if 'segmentation/intern_vit' in path:
                assert img.shape[1] % 14 == 0 and img.shape[2] % 14 == 0
            assert tuple(gt.shape[1:]) == (64, 64)


def test_ade20k_training_set_through_a_few_shot_config(synthetic_ade):
    path = osp.join(SEG, 'intern_vit_6b', 'few_shot',
                    'linear_intern-vit-6b_8xb2-10k_ade20k-1of8-504x504.py')
    cfg = load(path)
    init_default_scope('mmseg')
    ds_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    ds_cfg.data_root = str(synthetic_ade)
    dataset = DATASETS.build(ds_cfg)
    assert len(dataset) == 2  # 1/8 of 16
    sample = dataset[0]
    assert sample['inputs'].shape[0] == 3
    assert sample['data_samples'].gt_sem_seg.data.max() <= 255


# --------------------------------------------------------------------------- recipes
def _load(rel):
    return load(osp.join(SEG, rel))


def _by_type(transforms, type_):
    found = [t for t in transforms if t['type'] == type_]
    assert len(found) == 1, (type_, transforms)
    return found[0]


RECIPE_CONFIGS = [_rel(p) for p in CONFIGS if 'segmentation/intern_vit' in p]


@pytest.mark.parametrize('rel', RECIPE_CONFIGS)
def test_common_recipe(rel):
    """AdamW 4e-5 (0.9, 0.999), poly 1.0 to 0 over the whole run times a warmup from 1e-6
    (mmcv 1.x), slide 504/322, evaluation and checkpoint every 1000 keeping the best mIoU,
    bf16, 8 GPUs x 2 images, the 504 pipelines, with_cp."""
    cfg = _load(rel)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(imports=['backbones', 'engine', 'segmentation'],
                                      allow_failed_imports=False)
    ow = cfg.optim_wrapper
    assert ow.type == 'AmpOptimWrapper' and ow.dtype == 'bfloat16'
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.lr == 4e-5
    assert tuple(ow.optimizer.betas) == (0.9, 0.999)
    poly, warmup = cfg.param_scheduler
    max_iters = cfg.train_cfg.max_iters
    # the reference's warmup: 1500 iterations of 80k, 100 / 200 / 400 / 800 of the few-shot
    # 5k / 10k / 20k / 40k; MMEngine schedulers end at `end - 1`, so `end` is the length + 1
    warmup_iters = {5000: 100, 10000: 200, 20000: 400, 40000: 800, 80000: 1500}[max_iters]
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end, warmup.by_epoch) == \
        ('LinearLR', 1e-6, 0, warmup_iters + 1, False)
    assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end, poly.by_epoch) == \
        ('PolyLR', 1.0, 0.0, 0, max_iters + 1, False)
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.val_interval == 1000
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(504, 504), stride=(322, 322))
    assert cfg.default_hooks.checkpoint.interval == 1000
    assert cfg.default_hooks.checkpoint.save_best == 'mIoU'
    assert cfg.default_hooks.checkpoint.rule == 'greater'
    assert not cfg.default_hooks.checkpoint.by_epoch
    assert cfg.optim_wrapper.constructor == 'InternViTLayerDecayOptimizerConstructor'
    assert cfg.optim_wrapper.paramwise_cfg.no_decay_suffixes == ['.bias']
    assert cfg.train_dataloader.batch_size == 2
    assert cfg.auto_scale_lr.base_batch_size == 16
    backbone = cfg.model.backbone
    assert backbone.type == 'InternViT' and backbone.patch_size == 14 and backbone.with_cp
    assert backbone.init_cfg.checkpoint.startswith('pretrained/')

    dp = cfg.model.data_preprocessor
    assert dp.size == (504, 504) and dp.pad_val == 0 and dp.seg_pad_val == 255
    train = cfg.train_dataloader.dataset.pipeline
    assert [t['type'] for t in train] == [
        'LoadImageFromFile', 'LoadAnnotations', 'ValidateSegSample', 'RandomResize',
        'RandomCrop', 'RandomFlip', 'PhotoMetricDistortion', 'PackSegInputs']
    assert _by_type(train, 'ValidateSegSample').num_classes == cfg.model.decode_head.num_classes
    resize = _by_type(train, 'RandomResize')
    assert resize.scale == (2016, 504) and resize.ratio_range == (0.5, 2.0) and resize.keep_ratio
    crop = _by_type(train, 'RandomCrop')
    assert crop.crop_size == (504, 504) and crop.cat_max_ratio == 0.75
    assert _by_type(train, 'RandomFlip').prob == 0.5
    test = cfg.test_dataloader.dataset.pipeline
    assert [t['type'] for t in test] == [
        'LoadImageFromFile', 'Resize', 'ResizeToMultiple', 'LoadAnnotations',
        'ValidateSegSample', 'PackSegInputs']
    # SETR_Resize: short side exactly 504, long side uncapped; the few-shot 1/2..1/16 configs
    # of the reference use plain Resize (long side <= 2016)
    capped = 'few_shot' in rel and '1of1-' not in rel
    assert _by_type(test, 'Resize').scale == ((2016, 504) if capped else (1000000, 504))
    assert _by_type(test, 'Resize').keep_ratio
    assert _by_type(test, 'ResizeToMultiple').size_divisor == 14
    ade = 'ade20k' in rel
    assert cfg.train_dataloader.dataset.type in (
        ('ADE20KDataset', 'FewShotADE20KDataset') if ade else ('COCOStuffDataset', ))
    for pipeline in (train, test):
        assert _by_type(pipeline, 'LoadAnnotations').get('reduce_zero_label', False) == ade
    assert cfg.model.decode_head.num_classes == (150 if ade else 171)


def _kind(rel):
    return rel.split('/')[1]


@pytest.mark.parametrize('rel', [r for r in RECIPE_CONFIGS if _kind(r) == 'linear_probing'])
def test_linear_probing_recipe(rel):
    cfg = _load(rel)
    bb = cfg.model.backbone
    assert bb.frozen and bb.frozen_dtype == 'bfloat16' and bb.drop_path_rate == 0
    assert bb.out_indices == ([23] if '300m' in rel else [44])
    head = cfg.model.decode_head
    assert head.type == 'InternViTLinearHead' and head.get('dropout_ratio', 0.0) == 0.0
    assert head.norm_cfg.type in ('BN', 'SyncBN')
    assert 'neck' not in cfg.model and 'auxiliary_head' not in cfg.model
    assert cfg.optim_wrapper.optimizer.weight_decay == 0
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 1.0
    assert cfg.train_cfg.max_iters == 80000


def _pyramid_indices(rel):
    if '300m' in rel:
        return [5, 11, 17, 23]
    return [11, 22, 33, 44] if '448px' in rel else [11, 23, 35, 47]


@pytest.mark.parametrize('rel', [r for r in RECIPE_CONFIGS
                                 if _kind(r) in ('head_tuning', 'full_tuning')])
def test_upernet_recipes(rel):
    cfg = _load(rel)
    bb, m = cfg.model.backbone, cfg.model
    assert bb.out_indices == _pyramid_indices(rel)
    assert m.neck.type == 'SimpleFeaturePyramid' and tuple(m.neck.rescales) == (4, 2, 1, 0.5)
    assert m.decode_head.type == 'UPerHead' and m.decode_head.channels == 1536
    assert m.auxiliary_head.type == 'FCNHead'
    # the reference feeds the auxiliary head from level 1 in head tuning, level 2 in full tuning
    assert m.auxiliary_head.in_index == (1 if _kind(rel) == 'head_tuning' else 2)
    assert m.neck.norm_cfg == dict(type='LN', eps=1e-6)
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    num_layers = 24 if '300m' in rel else 45 if '448px' in rel else 48
    assert cfg.train_cfg.max_iters == 80000
    if _kind(rel) == 'head_tuning':
        assert bb.frozen and bb.frozen_dtype == 'bfloat16' and bb.drop_path_rate == 0
        assert cfg.optim_wrapper.paramwise_cfg == dict(
            num_layers=num_layers, layer_decay_rate=1.0, no_decay_suffixes=['.bias'])
    else:
        assert not bb.get('frozen', False) and bb.drop_path_rate == 0.4
        assert cfg.optim_wrapper.paramwise_cfg == dict(
            num_layers=num_layers, layer_decay_rate=0.95, no_decay_suffixes=['.bias'])
        assert resolve_arch(bb.arch)['num_layers'] == num_layers


@pytest.mark.parametrize('rel', [r for r in RECIPE_CONFIGS if '448px' in r])
def test_448px_weights(rel):
    cfg = _load(rel)
    bb = cfg.model.backbone
    version = rel.split('/')[0].replace('intern_vit_6b_448px_', '')
    assert bb.arch == '6b-448px' and bb.pretrain_size == 448
    assert bb.init_cfg.checkpoint == f'pretrained/intern_vit_6b_448px_{version}'


@pytest.mark.parametrize('denominator,iters', [(16, 5000), (8, 10000), (4, 20000),
                                               (2, 40000), (1, 80000)])
def test_few_shot_recipe(denominator, iters):
    rel = (f'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-{iters // 1000}k_ade20k-'
           f'1of{denominator}-504x504.py')
    cfg = _load(rel)
    ds = cfg.train_dataloader.dataset
    assert ds.type == 'FewShotADE20KDataset'
    assert ds.subset_ratio == pytest.approx(1 / denominator) and ds.subset_seed == 0
    assert cfg.train_cfg.max_iters == iters and cfg.param_scheduler[0].end == iters + 1
    # warmup 100 / 200 / 400 / 800 / 1500 iterations
    assert cfg.param_scheduler[1].end == {5000: 100, 10000: 200, 20000: 400, 40000: 800,
                                          80000: 1500}[iters] + 1
    bb = cfg.model.backbone
    assert bb.out_indices == [47] and bb.drop_path_rate == 0.4 and not bb.get('frozen', False)
    assert cfg.model.decode_head.type == 'InternViTLinearHead'
    assert cfg.optim_wrapper.optimizer.weight_decay == 0.05
    assert cfg.optim_wrapper.constructor == 'InternViTLayerDecayOptimizerConstructor'
    assert cfg.optim_wrapper.paramwise_cfg == dict(num_layers=48, layer_decay_rate=0.95,
                                                   no_decay_suffixes=['.bias'])
    # The validation set is always the full ADE20K validation split.
    assert cfg.val_dataloader.dataset.type == 'ADE20KDataset'


@pytest.mark.parametrize('rel', [r for r in RECIPE_CONFIGS if 'intern_vit_6b/' in r
                                 or 'intern_vit_6b_448px' in r])
def test_6b_sharding(rel):
    """A trainable 6B backbone trains with FSDP2 (FlexibleRunner, configs/_base_/strategies/);
    frozen ones with the plain Runner."""
    cfg = _load(rel)
    if cfg.model.backbone.get('frozen'):
        assert cfg.get('runner_type', 'Runner') == 'Runner' and not cfg.get('strategy')
    else:
        assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
        assert cfg.strategy.wrap_modules == ['Block']  # one shard group per InternViT block
        assert cfg.strategy.mixed_precision == dict(param_dtype='bfloat16',
                                                    reduce_dtype='float32')
        # sharded checkpoints, and one file at the end for tools/test.py
        assert dict(type='ExportConsolidatedHook', filename='consolidated.pth') in \
            cfg.custom_hooks
        from mmengine.registry import STRATEGIES

        import engine.strategies  # noqa: F401
        assert STRATEGIES.get(cfg.strategy.type) is not None


def test_300m_full_tuning_uses_a_plain_runner():
    cfg = _load('intern_vit_300m/full_tuning/upernet_intern-vit-300m_8xb2-80k_ade20k-504x504.py')
    assert 'runner_type' not in cfg
    assert cfg.model.backbone.frozen is False and cfg.model.backbone.frozen_dtype is None
