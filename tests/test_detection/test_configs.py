"""Every detection config builds (with a tiny backbone), trains one step, predicts, has the
strides its neck produces, and its pipelines run; the 6B configs carry the reference recipe."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ._tiny import (DET_CONFIG_DIR, TINY_WIDTH, config_id, detection_configs, fake_batch,
                    tiny_model_cfg)

CONFIGS = detection_configs()
NUM_CONFIGS = 8  # {6B, 300M} x {head, full tuning} x {simple pyramid, adapter}
SIX_B = [p for p in CONFIGS if '/intern_vit_6b/' in p]


def _is_adapter(path):
    return '-adapter_' in osp.basename(path)


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
        assert name.startswith('mask-rcnn_intern-vit-') and name.endswith(
            '_8xb2-1x_coco-1024x1024.py'), name
        cfg = Config.fromfile(path)
        assert cfg.default_scope == 'mmdet'
        assert cfg.custom_imports == dict(imports=['backbones', 'detection'],
                                          allow_failed_imports=False)


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
    expected = [4.0, 8.0, 16.0, 32.0, 64.0] if _is_adapter(path) else [3.5, 7.0, 14.0, 28.0, 56.0]
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
    assert h <= 1024 and w <= 1024
    assert out['data_samples'].gt_instances.masks.height == h

    test = DATASETS.build(dict(cfg.test_dataloader.dataset, ann_file='annotations/'
                               'instances_val.json', data_prefix=dict(img='val/'), **overrides))
    out = test[0]
    # Test images are resized (keep ratio) so that the longer side is 1024.
    assert max(out['inputs'].shape[-2:]) == 1024
    assert out['data_samples'].ori_shape == (128, 128)


def _find(items, type_name):
    found = [t for t in items if t['type'] == type_name]
    assert len(found) == 1, (type_name, items)
    return found[0]


@pytest.mark.parametrize('path', SIX_B, ids=config_id)
def test_6b_configs_carry_the_reference_recipe(path):
    assert len(SIX_B) == 4
    cfg = Config.fromfile(path)
    bb = cfg.model.backbone
    assert bb.arch == '6b'
    assert bb.init_cfg == dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')
    # 1x: 12 epochs, lr steps after epochs 8 and 11.
    assert cfg.train_cfg.type == 'EpochBasedTrainLoop' and cfg.train_cfg.max_epochs == 12
    step = _find(cfg.param_scheduler, 'MultiStepLR')
    assert step.milestones == [8, 11] and step.by_epoch and step.gamma == 0.1
    # 1024 crops (LSJ-style), batches padded to 1024, 8 GPUs x 2 images.
    crop = _find(cfg.train_dataloader.dataset.pipeline, 'RandomCrop')
    assert tuple(crop.crop_size) == (1024, 1024)
    assert _find(cfg.train_dataloader.dataset.pipeline, 'RandomResize').ratio_range == (0.1, 2.0)
    pad = _find(cfg.model.data_preprocessor.batch_augments, 'BatchFixedSizePad')
    assert tuple(pad.size) == (1024, 1024)
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    # AdamW in bf16 autocast.
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}

    if '/full_tuning/' in path:
        assert cfg.optim_wrapper.constructor == 'InternViTLayerDecayOptimizerConstructor'
        assert cfg.optim_wrapper.paramwise_cfg == dict(num_layers=48, layer_decay_rate=0.95)
        assert bb.drop_path_rate == 0.4 and bb.with_cp is True
        assert not bb.get('frozen', False)
        # a trainable 6B backbone is sharded: FSDP2, with a single-file export at the end
        assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
        assert dict(type='ExportConsolidatedHook', filename='consolidated.pth') in \
            cfg.custom_hooks
        if not _is_adapter(path):
            assert bb.window_size == 14 and bb.global_indices == [11, 23, 35, 47]
    else:
        assert bb.frozen is True and bb.frozen_dtype == 'bfloat16'
        assert 'constructor' not in cfg.optim_wrapper
        assert cfg.get('runner_type', 'Runner') == 'Runner'
    if _is_adapter(path):
        assert bb.type == 'InternViTAdapter'
        assert bb.interaction_indexes == [[0, 11], [12, 23], [24, 35], [36, 47]]
    else:
        assert bb.type == 'InternViT' and bb.patch_size == 14
        assert bb.out_indices == [11, 23, 35, 47]


def test_full_tuning_layer_decay_builds_on_the_detector():
    """The layer-decay constructor groups a (tiny) detector's parameters: stem, blocks, rest."""
    from mmdet.registry import MODELS
    from mmengine.optim import build_optim_wrapper

    path = osp.join(DET_CONFIG_DIR, 'intern_vit_6b', 'full_tuning',
                    'mask-rcnn_intern-vit-6b_8xb2-1x_coco-1024x1024.py')
    cfg = Config.fromfile(path)
    model = MODELS.build(tiny_model_cfg(cfg.model))
    wrapper_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')  # no bf16 autocast on the CPU
    wrapper_cfg.pop('dtype')
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    groups = wrapper.optimizer.param_groups
    n_params = sum(len(g['params']) for g in groups)
    assert n_params == sum(1 for p in model.parameters() if p.requires_grad)
    by_layer = {g['layer_id']: g['lr_scale'] for g in groups}
    assert by_layer[49] == 1.0  # neck and heads
    assert by_layer[0] == pytest.approx(0.95 ** 49)  # stem


def test_metafile_lists_every_config_with_its_weights():
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
    ref = models['configs/detection/intern_vit_6b/full_tuning/'
                 'mask-rcnn_intern-vit-6b_8xb2-1x_coco-1024x1024.py']['Results']
    assert [r['Metrics'] for r in ref] == [{'box AP': 53.8}, {'mask AP': 48.1}]
