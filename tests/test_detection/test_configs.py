"""Every detection config builds (with a tiny backbone), trains one step, predicts, has the
strides its neck produces, and its pipelines run. The settings of the two published recipes are
asserted in test_reference_recipes.py; here the adapter and ViTDet-style variants."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ._tiny import (DET_CONFIG_DIR, TINY_WIDTH, config_id, detection_configs, fake_batch,
                    tiny_model_cfg)

CONFIGS = detection_configs()
# 6B: the InternVL frozen and PIIP full-tuning recipes, and an adapter config per regime;
# 300M: an adapter and a ViTDet-style config per regime.
NUM_CONFIGS = 8
SIX_B = [p for p in CONFIGS if '/intern_vit_6b/' in p]
REFERENCE_NAMES = {
    ('intern_vit_6b', 'head_tuning'): 'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-1333x800.py',
    ('intern_vit_6b', 'full_tuning'): 'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-ms-1024x1024.py',
}


def _is_adapter(path):
    return '-adapter_' in osp.basename(path)


def _is_vitdet(path):
    return '-vitdet_' in osp.basename(path)


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy machine the threads'
    spin-waiting makes them many times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_config_count_and_names():
    assert len(CONFIGS) == NUM_CONFIGS, [config_id(p) for p in CONFIGS]
    for path in CONFIGS:
        rel = config_id(path)
        backbone, regime, name = rel.split(osp.sep)
        assert backbone in ('intern_vit_6b', 'intern_vit_300m')
        assert regime in ('head_tuning', 'full_tuning')
        assert name.startswith('mask-rcnn_intern-vit-') and '_8xb2-1x_coco-' in name, name
        # every config is one of: a published recipe, an adapter config, our ViTDet variant
        assert name == REFERENCE_NAMES.get((backbone, regime)) or _is_adapter(path) or \
            (_is_vitdet(path) and name.endswith('_coco-lsj-1024x1024.py')), name
        cfg = Config.fromfile(path)
        assert cfg.default_scope == 'mmdet'
        assert cfg.custom_imports == dict(imports=['backbones', 'engine', 'detection'],
                                          allow_failed_imports=False)
    for (backbone, regime), name in REFERENCE_NAMES.items():
        assert osp.join(DET_CONFIG_DIR, backbone, regime, name) in CONFIGS


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_tiny_model_trains_and_predicts(path, one_thread):
    from mmdet.registry import MODELS

    from detection import check_detector_strides

    cfg = Config.fromfile(path)
    cfg.model = tiny_model_cfg(cfg.model)
    # Fewer RoIs than the COCO recipe, to keep the 256-channel heads cheap on a CPU.
    cfg.model.train_cfg.rcnn.sampler.num = 16
    cfg.model.test_cfg.rpn.max_per_img = 20
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert model.backbone.embed_dims == TINY_WIDTH

    measured = check_detector_strides(model)
    expected = [3.5, 7.0, 14.0, 28.0, 56.0] if _is_vitdet(path) else [4.0, 8.0, 16.0, 32.0, 64.0]
    assert measured == expected

    model.train()
    inputs, samples = fake_batch(cfg.model.roi_head.bbox_head.num_classes)
    losses = model.loss(inputs, samples)
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert key in losses, sorted(losses)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)
    total.backward()

    vit_params = [p for n, p in model.backbone.named_parameters() if n.startswith('blocks.')]
    frozen = cfg.model.backbone.get('frozen', False)
    if frozen:
        assert all(not p.requires_grad and p.grad is None for p in vit_params)
        if cfg.model.backbone.get('frozen_dtype') == 'bfloat16':
            assert all(p.dtype == torch.bfloat16 for p in vit_params)
    else:
        assert all(p.grad is not None for p in vit_params if p.requires_grad)
    # The neck and heads always learn.
    assert model.rpn_head.rpn_cls.weight.grad is not None
    assert model.roi_head.mask_head.conv_logits.weight.grad is not None

    model.eval()
    with torch.no_grad():
        preds = model.predict(inputs, samples)
    assert len(preds) == 1 and 'masks' in preds[0].pred_instances


@pytest.mark.parametrize('path', CONFIGS, ids=config_id)
def test_pipelines_run_on_coco_format_data(path, synthetic_coco, coco_maker):
    from mmdet.registry import DATASETS

    cfg = Config.fromfile(path)
    overrides = dict(data_root=str(synthetic_coco), metainfo=dict(classes=coco_maker.CLASSES))
    train = DATASETS.build(dict(cfg.train_dataloader.dataset, ann_file='annotations/'
                                'instances_train.json', data_prefix=dict(img='train/'),
                                **overrides))
    out = train[0]
    h, w = out['inputs'].shape[-2:]
    assert out['data_samples'].gt_instances.masks.height == h
    single_scale = osp.basename(path).endswith('_coco-1333x800.py')
    if single_scale:  # a 128 x 128 image: short side to 800
        assert (h, w) == (800, 800)
    else:  # a crop of at most 1024
        assert h <= 1024 and w <= 1024

    test = DATASETS.build(dict(cfg.test_dataloader.dataset, ann_file='annotations/'
                               'instances_val.json', data_prefix=dict(img='val/'), **overrides))
    out = test[0]
    # Test images: the reference recipes resize to (1333, 800), the LSJ ones to 1024.
    lsj = _find(cfg.train_dataloader.dataset.pipeline, 'RandomResize', optional=True)
    assert max(out['inputs'].shape[-2:]) == (1024 if lsj else 800)
    assert out['data_samples'].ori_shape == (128, 128)


def _find(items, type_name, optional=False):
    found = [t for t in items if t['type'] == type_name]
    if optional and not found:
        return None
    assert len(found) == 1, (type_name, items)
    return found[0]


@pytest.mark.parametrize('path', [p for p in CONFIGS if _is_adapter(p) or _is_vitdet(p)],
                         ids=config_id)
def test_variant_configs_keep_their_recipe(path):
    """Our own variants (no published number): ViT-Adapter or ViTDet-style simple pyramid,
    both with LSJ 1024 crops, GroupNorm heads and the shared 1x schedule."""
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    step = _find(cfg.param_scheduler, 'MultiStepLR')
    assert step.milestones == [8, 11] and step.by_epoch and step.gamma == 0.1
    assert _find(cfg.param_scheduler, 'LinearLR').end == 500
    crop = _find(cfg.train_dataloader.dataset.pipeline, 'RandomCrop')
    assert tuple(crop.crop_size) == (1024, 1024)
    assert _find(cfg.train_dataloader.dataset.pipeline, 'RandomResize').ratio_range == (0.1, 2.0)
    pad = _find(cfg.model.data_preprocessor.batch_augments, 'BatchFixedSizePad')
    assert tuple(pad.size) == (1024, 1024)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    full = '/full_tuning/' in path
    if full:
        assert cfg.optim_wrapper.constructor == 'InternViTLayerDecayOptimizerConstructor'
        assert bb.drop_path_rate == 0.4 and not bb.get('frozen', False)
    else:
        assert bb.frozen is True and bb.frozen_dtype == 'bfloat16'
        assert 'constructor' not in cfg.optim_wrapper
    if full and '/intern_vit_6b/' in path:  # a trainable 6B backbone is sharded
        assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
        assert dict(type='ExportConsolidatedHook', filename='consolidated.pth') in \
            cfg.custom_hooks
    else:
        assert cfg.get('runner_type', 'Runner') == 'Runner'
    if _is_adapter(path):
        assert bb.type == 'InternViTAdapter' and bb.patch_size == 16
    else:
        assert bb.type == 'InternViT' and bb.patch_size == 14 and bb.arch == '300m'
        assert bb.out_indices == [5, 11, 17, 23]
        if full:
            assert bb.window_size == 14 and bb.global_indices == [5, 11, 17, 23]


def test_metafile_lists_every_config_with_its_weights_and_source():
    import yaml

    from ._tiny import ROOT
    with open(osp.join(DET_CONFIG_DIR, 'metafile.yaml')) as f:
        meta = yaml.safe_load(f)
    models = {m['Config']: m for m in meta['Models']}
    assert sorted(osp.join(ROOT, p) for p in models) == CONFIGS
    for rel, m in models.items():
        cfg = Config.fromfile(osp.join(ROOT, rel))
        assert m['Name'] == osp.splitext(osp.basename(rel))[0]
        assert m['Metadata']['Pretrained Weights'] == cfg.model.backbone.init_cfg.checkpoint
        assert m['Metadata']['Recipe Source']
    # Only the PIIP baseline carries a number, and says where it comes from.
    with_results = {rel: m for rel, m in models.items() if 'Results' in m}
    piip = 'configs/detection/intern_vit_6b/full_tuning/' + \
        REFERENCE_NAMES[('intern_vit_6b', 'full_tuning')]
    assert list(with_results) == [piip]
    assert [r['Metrics'] for r in with_results[piip]['Results']] == [{'box AP': 53.8},
                                                                    {'mask AP': 48.1}]
    assert 'PIIP' in with_results[piip]['Metadata']['Recipe Source']
    internvl = 'configs/detection/intern_vit_6b/head_tuning/' + \
        REFERENCE_NAMES[('intern_vit_6b', 'head_tuning')]
    assert 'InternVL-MMDetSeg' in models[internvl]['Metadata']['Recipe Source']


def test_readme_numbers_only_next_to_the_piip_baseline():
    from ._tiny import ROOT
    for readme in (osp.join(DET_CONFIG_DIR, 'README.md'), osp.join(ROOT, 'README.md')):
        with open(readme) as f:
            lines = f.read().splitlines()
        for line in lines:
            if '53.8' in line and line.startswith('|'):
                assert REFERENCE_NAMES[('intern_vit_6b', 'full_tuning')] in line, line
                assert 'PIIP' in line, line
