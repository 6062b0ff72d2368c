"""The training settings of the segmentation recipes against the InternVL reference: the
learning rate at every iteration (mmcv 1.x poly x linear warmup), the weight decay of each kind
of parameter in the built groups, and the test resize."""
import copy
import glob
import os.path as osp

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmengine.optim import build_optim_wrapper
from mmengine.registry import PARAM_SCHEDULERS, init_default_scope
from mmseg.registry import MODELS

from ._tiny import cpu_optim_wrapper_cfg, tiny_model_cfg

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = osp.join(ROOT, 'configs', 'segmentation')
RECIPES = sorted(osp.relpath(p, SEG) for p in glob.glob(osp.join(SEG, 'intern_vit_6b*', '*', '*.py'))
                 if '/vit_adapter/' not in p)
# the reference's (max_iters, warmup_iters) for each schedule
SCHEDULES = {80000: 1500, 40000: 800, 20000: 400, 10000: 200, 5000: 100}


def reference_lr(i, max_iters, warmup, base=4e-5, ratio=1e-6):
    """mmcv 1.x PolyLrUpdaterHook (power 1, min_lr 0) with linear warmup, by_epoch=False."""
    lr = base * (1 - i / max_iters)
    if i < warmup:
        lr *= 1 - (1 - i / warmup) * (1 - ratio)
    return lr


def _load(rel):
    return Config.fromfile(osp.join(SEG, rel))


@pytest.mark.parametrize('max_iters', sorted(SCHEDULES))
def test_lr_equals_mmcv_poly_with_warmup_at_every_iteration(max_iters):
    rels = [r for r in RECIPES if _load(r).train_cfg.max_iters == max_iters]
    assert rels, max_iters
    schedules = {repr(_load(r).param_scheduler) for r in rels}
    assert len(schedules) == 1, schedules  # one schedule per length: test it once
    cfg = _load(rels[0])
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=cfg.optim_wrapper.optimizer.lr)
    schedulers = [PARAM_SCHEDULERS.build(dict(copy.deepcopy(s), optimizer=optimizer))
                  for s in cfg.param_scheduler]
    warmup = SCHEDULES[max_iters]
    worst = 0.0
    for i in range(max_iters):
        ref = reference_lr(i, max_iters, warmup)
        worst = max(worst, abs(optimizer.param_groups[0]['lr'] - ref) / ref)
        for s in schedulers:
            s.step()
    assert worst <= 1e-9, worst


def _groups_by_name(model, optim_wrapper):
    by_id = {}
    for group in optim_wrapper.optimizer.param_groups:
        for p in group['params']:
            by_id[id(p)] = group
    return {n: by_id.get(id(p)) for n, p in model.named_parameters()}


@pytest.mark.parametrize('rel', RECIPES)
def test_weight_decay_and_lr_scale_of_each_kind_of_parameter(rel):
    """What the reference's layer-decay constructor gave: no decay for 1-D parameters and
    biases; pos_embed, block weights and head weights decay at the config's rate (0.05; 0 for
    linear probing); lr scale rate ** (L + 1 - layer id)."""
    cfg = _load(rel)
    init_default_scope('mmseg')
    model = MODELS.build(tiny_model_cfg(cfg))
    groups = _groups_by_name(model, build_optim_wrapper(model, cpu_optim_wrapper_cfg(cfg)))
    wd = 0.0 if '/linear_probing/' in rel else 0.05
    rate = cfg.optim_wrapper.paramwise_cfg.layer_decay_rate
    num_layers = cfg.optim_wrapper.paramwise_cfg.num_layers
    trained_vit = not cfg.model.backbone.get('frozen', False)
    assert rate == (0.95 if trained_vit else 1.0)
    head_w = 'decode_head.conv_seg.weight'
    assert groups[head_w]['weight_decay'] == wd and groups[head_w]['lr_scale'] == 1.0
    assert groups['decode_head.conv_seg.bias']['weight_decay'] == 0.0
    if 'neck' in cfg.model:
        assert groups['neck.stages.0.1.weight']['weight_decay'] == 0.0  # the LayerNorm
        assert groups['neck.stages.0.0.weight']['weight_decay'] == wd
        assert groups['neck.stages.0.0.bias']['weight_decay'] == 0.0
    if not trained_vit:
        assert not any(n.startswith('backbone.') and g is not None for n, g in groups.items())
        return
    # a reference quirk: pos_embed and cls_token decay
    for name in ('backbone.pos_embed', 'backbone.cls_token', 'backbone.blocks.3.attn.qkv.weight'):
        assert groups[name]['weight_decay'] == wd, name
    for name in ('backbone.blocks.3.norm1.weight', 'backbone.blocks.3.attn.proj.bias',
                 'backbone.blocks.3.ls1.gamma', 'backbone.patch_embed.proj.bias'):
        assert groups[name]['weight_decay'] == 0.0, name
    assert groups['backbone.pos_embed']['lr_scale'] == pytest.approx(rate ** (num_layers + 1))
    assert groups['backbone.blocks.3.attn.qkv.weight']['lr_scale'] == \
        pytest.approx(rate ** (num_layers - 3))


@pytest.mark.parametrize('rel', [
    'intern_vit_6b/full_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py',
    'intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_coco-stuff164k-504x504.py'])
def test_wide_test_image_keeps_a_short_side_of_exactly_504(rel, tmp_path):
    """The reference's SETR_Resize: short side 504, long side uncapped (then up to a multiple
    of 14); mmseg's plain Resize to (2016, 504) would give a short side of 201 here."""
    img = tmp_path / 'wide.jpg'
    cv2.imwrite(str(img), np.full((100, 1000, 3), 127, np.uint8))
    seg = tmp_path / 'wide.png'
    cv2.imwrite(str(seg), np.ones((100, 1000), np.uint8))
    init_default_scope('mmseg')
    cfg = _load(rel)
    pipeline = Compose(copy.deepcopy(cfg.test_dataloader.dataset.pipeline))
    out = pipeline(dict(img_path=str(img), seg_map_path=str(seg), seg_fields=[],
                        reduce_zero_label='ade20k' in rel))
    assert tuple(out['inputs'].shape[1:]) == (504, 5040)


def test_meta_device_parameter_counts_of_the_6b_recipes():
    """Trainable / total parameters of the 6B linear, head-tuning and full-tuning models
    (auxiliary head excluded), built on the meta device: the reference's 0.5M / 5.9B,
    0.4B / 6.3B and 6.3B / 6.3B."""
    init_default_scope('mmseg')
    counts = {}
    for kind, rel in (('linear', 'intern_vit_6b/linear_probing/'
                                 'linear_intern-vit-6b_8xb2-80k_ade20k-504x504.py'),
                      ('head', 'intern_vit_6b/head_tuning/'
                               'upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py'),
                      ('full', 'intern_vit_6b/full_tuning/'
                               'upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py')):
        model_cfg = copy.deepcopy(_load(rel).model)
        model_cfg.backbone.pop('init_cfg', None)
        with torch.device('meta'):
            model = MODELS.build(model_cfg)
        params = [(n, p) for n, p in model.named_parameters() if not n.startswith('auxiliary_head.')]
        counts[kind] = (sum(p.numel() for _, p in params if p.requires_grad),
                        sum(p.numel() for _, p in params))
    assert 0.4e6 < counts['linear'][0] < 0.6e6 and 5.85e9 < counts['linear'][1] < 5.95e9
    assert 0.35e9 < counts['head'][0] < 0.45e9 and 6.25e9 < counts['head'][1] < 6.35e9
    assert counts['full'][0] == counts['full'][1] and 6.25e9 < counts['full'][1] < 6.35e9
