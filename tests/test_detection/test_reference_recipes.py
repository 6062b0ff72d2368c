"""The two published InternViT-6B detection recipes: every setting of their table, a training
step on the synthetic COCO set through their own pipelines, predictions, RoI features of every
detection config against contiguous copies of its FPN outputs, and strict loading of a
reference-layout detection checkpoint."""
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from ._tiny import (DEMO_ADAPTER_CONFIG, DEMO_CONFIG, DET_CONFIG_DIR, config_id,
                    detection_configs, tiny_model_cfg)
from .conftest import load_tool

HEAD_TUNING = osp.join(DET_CONFIG_DIR, 'intern_vit_6b', 'head_tuning',
                       'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-1333x800.py')
FULL_TUNING = osp.join(DET_CONFIG_DIR, 'intern_vit_6b', 'full_tuning',
                       'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-ms-1024x1024.py')
RECIPES = [HEAD_TUNING, FULL_TUNING]
RECIPE_IDS = ['internvl-frozen', 'piip-baseline']
IMAGENET_MEAN, IMAGENET_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]
MS_SHORT_SIDES = [480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800]


@pytest.fixture(scope='module', autouse=True)
def mmdet_scope():
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _types(pipeline):
    return [t['type'] for t in pipeline]


def _short_long(scales):
    return sorted((min(s), max(s)) for s in scales)


def _build_tiny(path, cheap_heads=True):
    from mmdet.registry import MODELS
    cfg = Config.fromfile(path)
    model_cfg = cfg.model if 'demo' in path else tiny_model_cfg(cfg.model)
    if cheap_heads:
        model_cfg.train_cfg.rcnn.sampler.num = 16
        model_cfg.test_cfg.rpn.max_per_img = 20
    model = MODELS.build(model_cfg)
    model.init_weights()
    return cfg, model


def _piip_layer_id(name, num_layers=48):
    """PIIP's get_num_layer_for_vit on a detector's parameter names (num_layers + 2 ids)."""
    if name in ('backbone.cls_token', 'backbone.mask_token', 'backbone.pos_embed') or \
            name.startswith('backbone.patch_embed'):
        return 0
    if name.startswith('backbone.blocks.'):
        return int(name.split('.')[2]) + 1
    return num_layers + 1


def _reference_groups(model, base_lr, base_wd, rate, num_layers=48):
    """(lr, weight decay) of every trainable parameter as the reference constructors set them:
    lr_scale = rate ** (num_layers + 2 - id - 1); no decay for 1-D parameters and names ending
    in '.bias' (their pos_embed / cls_token exemption never matches a 'backbone.' name)."""
    out = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        wd = 0.0 if p.ndim == 1 or name.endswith('.bias') else base_wd
        lid = _piip_layer_id(name, num_layers)
        out[name] = (base_lr * rate ** (num_layers + 2 - lid - 1), wd)
    return out


def _cpu_optim_wrapper(model, cfg):
    """The config's optimizer, constructor and clipping, without bf16 autocast (CPU)."""
    from mmengine.optim import build_optim_wrapper
    wrapper_cfg = dict(cfg.optim_wrapper, type='OptimWrapper')
    wrapper_cfg.pop('dtype', None)
    return build_optim_wrapper(model, wrapper_cfg)


def _assert_groups_match_reference(model, cfg, rate):
    wrapper = _cpu_optim_wrapper(model, cfg)
    names = {id(p): n for n, p in model.named_parameters()}
    got = {}
    for g in wrapper.optimizer.param_groups:
        for p in g['params']:
            got[names[id(p)]] = (g['lr'], g['weight_decay'])
    expected = _reference_groups(model, 1e-4, 0.05, rate)
    assert sorted(got) == sorted(expected)
    for name, (lr, wd) in expected.items():
        assert got[name][0] == pytest.approx(lr, rel=1e-9), name
        assert got[name][1] == wd, name
    return got


# ----------------------------------------------------------------------------- the table
def _assert_common_table(cfg):
    """Rows shared by both recipes."""
    bb = cfg.model.backbone
    assert bb.type == 'InternViT' and bb.arch == '6b'
    assert bb.init_cfg == dict(type='Pretrained', checkpoint='pretrained/intern_vit_6b_224px.pth')
    # stem: patch 16, 14 x 14 kernel resized by plain bicubic interpolation; no cls token
    assert bb.patch_size == 16 and bb.patch_embed_resize == 'bicubic'
    assert bb.with_cls_token is False
    # features: only block 47, fed to every level of the pyramid, no projection, LN eps 1e-6
    assert bb.out_indices == [47]
    sfp, fpn = cfg.model.neck
    assert sfp == dict(type='SimpleFeaturePyramid', in_channels=3200, out_channels=None,
                       rescales=(4, 2, 1, 0.5), norm_cfg=dict(type='LN', eps=1e-6))
    # mmdet's FPN, 3200 x 4 -> 256, five outputs (max-pooled P6), no norm
    assert fpn == dict(type='FPN', in_channels=[3200] * 4, out_channels=256, num_outs=5)
    # standard R50-FPN Mask R-CNN heads
    rpn = cfg.model.rpn_head
    assert rpn.type == 'RPNHead' and rpn.get('num_convs', 1) == 1
    assert rpn.in_channels == 256 and rpn.feat_channels == 256
    assert rpn.anchor_generator == dict(type='AnchorGenerator', scales=[8],
                                        ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64])
    roi = cfg.model.roi_head
    assert roi.type == 'StandardRoIHead'
    for extractor, size in ((roi.bbox_roi_extractor, 7), (roi.mask_roi_extractor, 14)):
        assert extractor.roi_layer == dict(type='RoIAlign', output_size=size, sampling_ratio=0)
        assert extractor.featmap_strides == [4, 8, 16, 32] and extractor.out_channels == 256
    box = roi.bbox_head
    assert box.type == 'Shared2FCBBoxHead' and box.fc_out_channels == 1024
    assert box.in_channels == 256 and box.num_classes == 80 and 'norm_cfg' not in box
    assert box.bbox_coder.target_stds == [0.1, 0.1, 0.2, 0.2]
    mask = roi.mask_head
    assert mask.type == 'FCNMaskHead' and mask.num_convs == 4 and mask.conv_out_channels == 256
    assert mask.num_classes == 80 and 'norm_cfg' not in mask
    assert cfg.model.train_cfg.rcnn.sampler.num == 512
    assert cfg.model.test_cfg.rcnn.max_per_img == 100
    # test: (1333, 800) keeping the ratio, no flip
    test = cfg.test_dataloader.dataset.pipeline
    assert _types(test) == ['LoadImageFromFile', 'Resize', 'LoadAnnotations', 'PackDetInputs']
    assert tuple(test[1].scale) == (1333, 800) and test[1].keep_ratio is True
    assert 'batch_augments' not in cfg.model.data_preprocessor
    assert cfg.model.data_preprocessor.bgr_to_rgb is True
    # AdamW lr 1e-4, betas (0.9, 0.999), wd 0.05, in bf16 autocast
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper' and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.optim_wrapper.optimizer == dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999),
                                               weight_decay=0.05)
    assert cfg.optim_wrapper.constructor == 'InternViTLayerDecayOptimizerConstructor'
    # 12 epochs, x0.1 after 8 and 11, linear warmup 500 iterations from 0.001
    assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=12, val_interval=1)
    warmup, steps = cfg.param_scheduler
    assert warmup == dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500)
    assert steps == dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[8, 11],
                         gamma=0.1)
    # 8 GPUs x 2 images, aspect-ratio groups
    assert cfg.train_dataloader.batch_size == 2 and cfg.auto_scale_lr.base_batch_size == 16
    assert cfg.train_dataloader.batch_sampler == dict(type='AspectRatioBatchSampler')
    assert cfg.val_dataloader.batch_size == 1
    assert set(cfg.val_evaluator.metric) == {'bbox', 'segm'}
    assert cfg.custom_imports == dict(imports=['backbones', 'engine', 'detection'],
                                      allow_failed_imports=False)


def test_internvl_frozen_recipe_table():
    cfg = Config.fromfile(HEAD_TUNING)
    _assert_common_table(cfg)
    bb = cfg.model.backbone
    # pos_embed at 256 / 16 = 16; window attention in all 48 blocks, 16 x 16, padding unmasked
    assert bb.img_size == 256
    assert bb.window_size == 16 and bb.window_pad_mask is False
    assert not bb.get('global_indices')
    # frozen, no drop path (bf16 weights: our stand-in for the reference's fp16)
    assert bb.frozen is True and bb.frozen_dtype == 'bfloat16' and bb.drop_path_rate == 0.0
    # single scale (1333, 800), flip 0.5; ImageNet mean / std; pad 32
    train = cfg.train_dataloader.dataset.pipeline
    assert _types(train) == ['LoadImageFromFile', 'LoadAnnotations', 'Resize', 'RandomFlip',
                             'PackDetInputs']
    assert train[1].with_bbox and train[1].with_mask
    assert tuple(train[2].scale) == (1333, 800) and train[2].keep_ratio is True
    assert train[3].prob == 0.5
    dp = cfg.model.data_preprocessor
    assert dp.mean == IMAGENET_MEAN and dp.std == IMAGENET_STD and dp.pad_size_divisor == 32
    # no decay for biases and 1-D parameters, no layer decay; clip at 1.0
    assert cfg.optim_wrapper.paramwise_cfg == dict(num_layers=48, layer_decay_rate=1.0,
                                                   no_decay_suffixes=['.bias'])
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=1.0, norm_type=2)
    # evaluation every epoch, keep the best; no sharding
    assert cfg.default_hooks.checkpoint == dict(type='CheckpointHook', interval=1,
                                                max_keep_ckpts=2, save_best='auto')
    assert cfg.get('runner_type', 'Runner') == 'Runner' and 'strategy' not in cfg

    _, model = _build_tiny(HEAD_TUNING)
    vit = model.backbone
    assert all(b.window_size == 16 and b.window_pad_mask is False for b in vit.blocks)
    assert not any(p.requires_grad for p in vit.parameters())
    got = _assert_groups_match_reference(model, cfg, rate=1.0)
    assert not any(n.startswith('backbone.') for n in got)  # only pyramid, FPN and heads learn
    assert {lr for lr, _ in got.values()} == {1e-4}


def test_piip_baseline_recipe_table():
    cfg = Config.fromfile(FULL_TUNING)
    _assert_common_table(cfg)
    bb = cfg.model.backbone
    # pos_embed at 224 / 16 = 14; global attention everywhere; trained, drop path 0.4
    assert bb.img_size == 224 and bb.window_size is None
    assert not bb.get('frozen', False) and bb.drop_path_rate == 0.4 and bb.with_cp is True
    # flip, then (a) short side 480..800 / 32, long <= 1333, or (b) 400/500/600, crop 384..600,
    # then (a); then a random crop of at most 1024 x 1024; mean = std = 127.5; pad 64
    train = cfg.train_dataloader.dataset.pipeline
    assert _types(train) == ['LoadImageFromFile', 'LoadAnnotations', 'RandomFlip',
                             'RandomChoice', 'RandomCrop', 'PackDetInputs']
    assert train[2].prob == 0.5
    choice = train[3]
    assert choice.get('prob') is None  # uniform
    (a, ), (b1, b2, b3) = choice.transforms
    for resize in (a, b3):
        assert resize.type == 'RandomChoiceResize' and resize.keep_ratio is True
        assert _short_long(resize.scales) == [(s, 1333) for s in MS_SHORT_SIDES]
    assert b1.type == 'RandomChoiceResize' and b1.keep_ratio is True
    assert _short_long(b1.scales) == [(400, 1333), (500, 1333), (600, 1333)]
    for crop, size in ((b2, (384, 600)), (train[4], (1024, 1024))):
        assert crop.type == 'RandomCrop' and crop.crop_type == 'absolute_range'
        assert tuple(crop.crop_size) == size and crop.allow_negative_crop is True
        assert not crop.get('recompute_bbox', False) and crop.get('bbox_clip_border', True)
    dp = cfg.model.data_preprocessor
    assert dp.mean == [127.5] * 3 and dp.std == [127.5] * 3 and dp.pad_size_divisor == 64
    # layer decay 0.95 over 48 blocks, no decay for biases and 1-D parameters; no clipping
    assert cfg.optim_wrapper.paramwise_cfg == dict(num_layers=48, layer_decay_rate=0.95,
                                                   no_decay_suffixes=['.bias'])
    assert 'clip_grad' not in cfg.optim_wrapper
    # sharded: FSDP2 by default, one consolidated file at the end; DeepSpeed ZeRO-1 bf16 swaps in
    assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
    assert dict(type='ExportConsolidatedHook', filename='consolidated.pth') in cfg.custom_hooks
    train_tool = load_tool('tools/train.py', 'train_tool_for_detection')
    train_tool.apply_strategy(cfg, 'deepspeed_zero1')
    assert cfg.strategy.type == 'DeepSpeedZeroStrategy' and cfg.strategy.bf16.enabled
    assert cfg.strategy.zero_optimization.stage == 1
    # evaluation every epoch (val_interval 1 above), the last checkpoint kept
    assert cfg.default_hooks.checkpoint == dict(type='CheckpointHook', interval=1,
                                                max_keep_ckpts=1)

    cfg = Config.fromfile(FULL_TUNING)
    _, model = _build_tiny(FULL_TUNING)
    vit = model.backbone
    assert all(b.window_size is None for b in vit.blocks)
    assert vit.blocks[0].drop_path.__class__.__name__ == 'Identity'
    assert vit.blocks[-1].drop_path.drop_prob == pytest.approx(0.4)
    assert all(p.requires_grad for p in vit.parameters())
    got = _assert_groups_match_reference(model, cfg, rate=0.95)
    assert got['backbone.pos_embed'] == (pytest.approx(1e-4 * 0.95 ** 49), 0.05)  # it decays
    assert got['backbone.blocks.0.norm1.weight'][1] == 0.0
    assert got['neck.1.lateral_convs.0.conv.weight'] == (1e-4, 0.05)


@pytest.mark.parametrize('path', RECIPES, ids=RECIPE_IDS)
def test_pyramid_deconvs_start_as_the_reference(path):
    """ConvTranspose weights N(0, sqrt(2 / (k * k * out_channels))), bias 0; LN ones / zeros."""
    _, model = _build_tiny(path)
    stages = model.neck[0].stages
    for deconv in (stages[0][0], stages[0][3], stages[1][0]):
        w = deconv.weight.detach()
        std = (2.0 / (2 * 2 * deconv.out_channels)) ** 0.5
        assert w.mean().abs() < 0.1 * std and abs(w.std().item() / std - 1) < 0.05
        assert (deconv.bias == 0).all()
    assert (stages[0][1].weight == 1).all() and (stages[0][1].bias == 0).all()


# ------------------------------------------------------------- train a step, predict
def _shrink(transforms, f=8):
    """The pipeline with every scale and crop size divided by ``f`` (keeping tiny tests tiny:
    128 px images are not enlarged to 800 px)."""
    out = []
    for t in transforms:
        if isinstance(t, list):
            out.append(_shrink(t, f))
            continue
        t = dict(t)
        if 'scale' in t:
            t['scale'] = tuple(s // f for s in t['scale'])
        if 'scales' in t:
            t['scales'] = [tuple(s // f for s in sc) for sc in t['scales']]
        if 'crop_size' in t:
            t['crop_size'] = tuple(s // f for s in t['crop_size'])
        if 'transforms' in t:
            t['transforms'] = _shrink(t['transforms'], f)
        out.append(t)
    return out


@pytest.mark.parametrize('path', RECIPES, ids=RECIPE_IDS)
def test_recipe_trains_a_step_on_synthetic_coco_and_predicts(path, synthetic_coco, coco_maker):
    from mmdet.registry import DATASETS
    from mmengine.dataset import pseudo_collate

    cfg, model = _build_tiny(path)
    classes = coco_maker.CLASSES

    def dataset(loader, split):
        ds = dict(loader.dataset, data_root=str(synthetic_coco), metainfo=dict(classes=classes),
                  ann_file=f'annotations/instances_{split}.json',
                  data_prefix=dict(img=f'{split}/'))
        ds['pipeline'] = _shrink(ds['pipeline'])
        return DATASETS.build(ds)

    train = dataset(cfg.train_dataloader, 'train')
    batch = pseudo_collate([train[0], train[1]])
    wrapper = _cpu_optim_wrapper(model, cfg)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    losses = model.train_step(batch, wrapper)
    for key in ('loss_rpn_cls', 'loss_rpn_bbox', 'loss_cls', 'loss_bbox', 'loss_mask'):
        assert torch.isfinite(losses[key]), key
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert any(n.startswith('neck.0.') for n in changed)
    assert any(n.startswith('roi_head.mask_head.') for n in changed)
    frozen = cfg.model.backbone.get('frozen', False)
    assert any(n.startswith('backbone.blocks.') for n in changed) is not frozen
    divisor = cfg.model.data_preprocessor.pad_size_divisor
    data = model.data_preprocessor(batch, training=True)
    assert all(s % divisor == 0 for s in data['inputs'].shape[-2:])

    test = dataset(cfg.test_dataloader, 'val')
    model.eval()
    with torch.no_grad():
        preds = model.test_step(pseudo_collate([test[0]]))
    inst = preds[0].pred_instances
    assert 'masks' in inst and inst.masks.shape[-2:] == (128, 128)  # the original image


# ------------------------------------------------------------- RoI features, contiguous
ALL_CONFIGS = detection_configs() + [DEMO_CONFIG, DEMO_ADAPTER_CONFIG]


def _cfg_id(path):
    return osp.basename(path) if 'demo' in path else config_id(path)


def test_mmcv_roi_align_reads_raw_nchw_memory_and_detection_makes_it_contiguous():
    """Why the next test matters: mmcv's RoIAlign indexes its input as contiguous NCHW memory,
    so a channels-last map pools other values than the same map made contiguous; `detection`
    (imported by every detection config) makes RoIAlign's input contiguous."""
    import detection  # noqa: F401
    from mmcv.ops import RoIAlign
    x = torch.randn(2, 8, 16, 20, generator=torch.Generator().manual_seed(0))
    rois = torch.tensor([[0, 1.0, 2.0, 15.0, 12.0], [1, 0.0, 0.0, 19.0, 15.0]])
    align = RoIAlign(7, spatial_scale=1.0, sampling_ratio=0)
    cl = x.to(memory_format=torch.channels_last)
    stock = RoIAlign.forward.__wrapped__
    assert (stock(align, cl, rois) - stock(align, x, rois)).abs().max() > 1e-2
    torch.testing.assert_close(align(cl, rois), stock(align, x, rois), atol=0, rtol=0)


@pytest.mark.parametrize('path', ALL_CONFIGS, ids=_cfg_id)
def test_roi_features_equal_those_of_contiguous_fpn_outputs(path):
    """Whatever the strides of the maps (InternViT's token maps with a cls token and some of
    the adapter's levels are transposed views), the heads pool the right values."""
    import detection  # noqa: F401  (as the configs' custom_imports)
    _, model = _build_tiny(path)
    model.eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(1))
    rois = torch.tensor([
        [0, 10.0, 12.0, 60.0, 70.0],     # scale < 112: level 0
        [1, 0.0, 4.0, 127.0, 120.0],     # level 1
        [0, -60.0, -40.0, 200.0, 230.0],  # level 2
        [1, -200.0, -150.0, 300.0, 350.0],  # level 3
    ])
    roi_head = model.roi_head
    with torch.no_grad():
        feats = model.extract_feat(x)
        for extractor in (roi_head.bbox_roi_extractor, roi_head.mask_roi_extractor):
            n = extractor.num_inputs
            got = extractor(feats[:n], rois)
            expected = extractor(tuple(f.contiguous() for f in feats[:n]), rois)
            assert got.abs().max() > 0
            torch.testing.assert_close(got, expected, atol=1e-6, rtol=0)


# ------------------------------------------------------------- reference checkpoints
# The reference keeps the pyramid inside its backbone (up1 = [ConvT, LN, GELU, ConvT],
# up2 = [ConvT]) and names its FPN `neck`; everything else has our names already.
REFERENCE_PYRAMID_KEYS = {f'backbone.{m}.{p}' for m in ('up1.0', 'up1.1', 'up1.3', 'up2.0')
                          for p in ('weight', 'bias')}


def _to_reference_layout(sd):
    out = {}
    for k, v in sd.items():
        if k.startswith('neck.0.stages.0.'):
            k = 'backbone.up1.' + k[len('neck.0.stages.0.'):]
        elif k.startswith('neck.0.stages.1.'):
            k = 'backbone.up2.' + k[len('neck.0.stages.1.'):]
        elif k.startswith('neck.1.'):
            k = 'neck.' + k[len('neck.1.'):]
        out[k] = v
    return out


@pytest.mark.parametrize('prefix', ['', 'module.'], ids=['bare', 'module'])
@pytest.mark.parametrize('path,grid', [(HEAD_TUNING, 16), (FULL_TUNING, 14)], ids=RECIPE_IDS)
def test_reference_detection_checkpoint_loads_strictly(path, grid, prefix):
    from backbones.checkpoint import convert_reference_checkpoint
    _, model = _build_tiny(path)
    g = torch.Generator().manual_seed(2)
    ours = {k: torch.randn(v.shape, generator=g).to(v.dtype) if v.is_floating_point() else v
            for k, v in model.state_dict().items()}
    ref = _to_reference_layout(ours)
    assert {k for k in ref if k.startswith(('backbone.up', 'neck.0.'))} == \
        REFERENCE_PYRAMID_KEYS
    assert 'backbone.cls_token' not in ref and ref['backbone.pos_embed'].shape[1] == 1 + grid ** 2
    converted, info = convert_reference_checkpoint({prefix + k: v for k, v in ref.items()})
    assert info['layout'] == 'detection' and info['head'] == 'mask_rcnn'
    assert info['num_classes'] == 80 and info['num_blocks'] == 4 and info['pos_grid'] == grid
    model.load_state_dict(converted, strict=True)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, ours[k], msg=k)
    torch.testing.assert_close(model.neck[0].stages[0][1].weight.detach(),
                               ref['backbone.up1.1.weight'])
    torch.testing.assert_close(model.neck[1].fpn_convs[0].conv.weight.detach(),
                               ref['neck.fpn_convs.0.conv.weight'])

