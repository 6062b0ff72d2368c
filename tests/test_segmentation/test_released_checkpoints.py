"""Released InternVL segmentation checkpoints in our recipe configs.

A tiny random model is written in the reference's released layout (``backbone.*`` with the
pyramid as ``backbone.up1/up2``, ``decode_head.*``, ``auxiliary_head.*``; bare or under
``module``), converted with ``tools/model_converters/internvit2mmseg.py``, loaded strictly into
the model of a recipe config (tiny width, same depth, 56 px crops), and its pyramid maps and
logits are compared with the reference's function written out below in plain torch (RMSNorm,
QK-norm over the full width, LayerScale; ConvT / channel LayerNorm / GELU / ConvT; BN then 1x1
for the linear head; ``pos_embed`` used as loaded at the crop grid). UperNet is mmseg's own
``UPerHead`` in both the reference and ours, so it is run as the stock module on the reference
features.
"""
import copy
import importlib.util
import re
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.runner import load_checkpoint

from backbones.intern_vit import resolve_arch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SEG = osp.join(ROOT, 'configs', 'segmentation')
CONVERTER = osp.join(ROOT, 'tools', 'model_converters', 'internvit2mmseg.py')
WIDTH, HEADS, MLP, CHANNELS, CROP, PATCH = 32, 2, 2.0, 16, 56, 14
GRID = CROP // PATCH

RECIPES = {
    'linear_probing': 'intern_vit_6b/linear_probing/linear_intern-vit-6b_8xb2-80k_ade20k-504x504.py',
    'head_tuning': 'intern_vit_6b/head_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py',
    'full_tuning': 'intern_vit_6b/full_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py',
    'few_shot': 'intern_vit_6b/few_shot/linear_intern-vit-6b_8xb2-5k_ade20k-1of16-504x504.py',
    '448px_head_tuning': 'intern_vit_6b_448px_v2_5/head_tuning/'
                         'upernet_intern-vit-6b-448px-v2-5_8xb2-80k_ade20k-504x504.py',
    '448px_coco_linear': 'intern_vit_6b_448px_v1_5/linear_probing/'
                         'linear_intern-vit-6b-448px-v1-5_8xb2-80k_coco-stuff164k-504x504.py',
}


def _converter():
    spec = importlib.util.spec_from_file_location('internvit2mmseg_cli', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_cfg(rel):
    """The recipe's model with a 32-wide backbone of the same depth at 56 px crops, in
    float32 (frozen weights not cast to bf16), without pretrained weights."""
    cfg = Config.fromfile(osp.join(SEG, rel))
    model = copy.deepcopy(cfg.model)
    bb = model.backbone
    arch = resolve_arch(bb.arch)
    bb.arch = dict(arch, embed_dims=WIDTH, num_heads=HEADS, mlp_ratio=MLP)
    bb.img_size = CROP
    bb.pop('init_cfg', None)
    if bb.get('frozen'):
        bb.frozen_dtype = None
    if 'neck' in model:
        model.neck.in_channels = WIDTH
    head = model.decode_head
    if head.type == 'UPerHead':
        head.in_channels = [WIDTH] * 4
        head.channels = CHANNELS
        model.auxiliary_head.in_channels = WIDTH
        model.auxiliary_head.channels = CHANNELS
    else:
        head.in_channels = WIDTH
    model.data_preprocessor.size = (CROP, CROP)
    model.test_cfg = dict(mode='slide', crop_size=(CROP, CROP), stride=(CROP, CROP))
    return cfg, model


def _build_head(cfg_dict):
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    return MODELS.build(cfg_dict)


def released_state_dict(rel, seed=0, with_vit=True):
    """Random weights in the reference's released names and shapes for the recipe ``rel``.

    ``pos_embed`` is random at the crop grid (1 + 4 * 4 tokens), i.e. a fine-tuned one that is
    no resampling of a smaller grid. BN statistics are random too, so that eval-mode heads are
    not the identity."""
    cfg, model = tiny_cfg(rel)
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    depth = resolve_arch(cfg.model.backbone.arch)['num_layers']
    C, H = WIDTH, int(WIDTH * MLP)
    sd = {}
    if with_vit:
        sd.update({'backbone.patch_embed.proj.weight': rnd(C, 3, PATCH, PATCH),
                   'backbone.patch_embed.proj.bias': rnd(C),
                   'backbone.cls_token': rnd(1, 1, C, scale=0.5),
                   'backbone.pos_embed': rnd(1, 1 + GRID * GRID, C, scale=0.5)})
        for i in range(depth):
            p = f'backbone.blocks.{i}.'
            sd.update({p + 'norm1.weight': 1 + rnd(C), p + 'attn.qkv.weight': rnd(3 * C, C, scale=0.2),
                       p + 'attn.q_norm.weight': 1 + rnd(C), p + 'attn.k_norm.weight': 1 + rnd(C),
                       p + 'attn.proj.weight': rnd(C, C, scale=0.2), p + 'attn.proj.bias': rnd(C),
                       p + 'ls1.gamma': 0.1 + rnd(C), p + 'norm2.weight': 1 + rnd(C),
                       p + 'mlp.fc1.weight': rnd(H, C, scale=0.2), p + 'mlp.fc1.bias': rnd(H),
                       p + 'mlp.fc2.weight': rnd(C, H, scale=0.2), p + 'mlp.fc2.bias': rnd(C),
                       p + 'ls2.gamma': 0.1 + rnd(C)})
    num_classes = model.decode_head.num_classes
    if model.decode_head.type == 'UPerHead':
        sd.update({'backbone.up1.0.weight': rnd(C, C, 2, 2, scale=0.3), 'backbone.up1.0.bias': rnd(C),
                   'backbone.up1.1.weight': 1 + rnd(C), 'backbone.up1.1.bias': rnd(C),
                   'backbone.up1.3.weight': rnd(C, C, 2, 2, scale=0.3), 'backbone.up1.3.bias': rnd(C),
                   'backbone.up2.0.weight': rnd(C, C, 2, 2, scale=0.3), 'backbone.up2.0.bias': rnd(C)})
        for prefix in ('decode_head', 'auxiliary_head'):
            head = _build_head(model[prefix])
            for k, v in head.state_dict().items():
                if k.endswith('num_batches_tracked'):
                    sd[f'{prefix}.{k}'] = torch.tensor(100)
                elif k.endswith('running_var'):
                    sd[f'{prefix}.{k}'] = 0.5 + torch.rand(v.shape, generator=g)
                elif v.is_floating_point():
                    sd[f'{prefix}.{k}'] = rnd(*v.shape, scale=0.2) + (1 if k.endswith('bn.weight') else 0)
    else:  # the reference's linear head: FCNHead(num_convs=0, with_norm=True)
        sd.update({'decode_head.norm.weight': 1 + rnd(C), 'decode_head.norm.bias': rnd(C),
                   'decode_head.norm.running_mean': rnd(C),
                   'decode_head.norm.running_var': 0.5 + torch.rand(C, generator=g),
                   'decode_head.norm.num_batches_tracked': torch.tensor(100),
                   'decode_head.conv_seg.weight': rnd(num_classes, C, 1, 1, scale=0.3),
                   'decode_head.conv_seg.bias': rnd(num_classes)})
    return sd


# --------------------------------------------------------------------------- the reference
def _rms(x, w, eps=1e-6):
    x = x.float()
    return w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


def reference_vit(sd, x, depth, out_indices):
    """InternViT-6B of the InternVL segmentation code, at its crop size (no resampling)."""
    W = {k[len('backbone.'):]: v.float() for k, v in sd.items() if k.startswith('backbone.')}
    t = F.conv2d(x, W['patch_embed.proj.weight'], W['patch_embed.proj.bias'], stride=PATCH)
    B, C, h, w = t.shape
    t = torch.cat([W['cls_token'].expand(B, -1, -1), t.flatten(2).transpose(1, 2)], 1)
    t = t + W['pos_embed']
    outs = []
    for i in range(depth):
        p = f'blocks.{i}.'
        y = _rms(t, W[p + 'norm1.weight'])
        q, k, v = (y @ W[p + 'attn.qkv.weight'].T).chunk(3, dim=-1)
        q, k = _rms(q, W[p + 'attn.q_norm.weight']), _rms(k, W[p + 'attn.k_norm.weight'])
        N, d = t.shape[1], C // HEADS
        q, k, v = (z.reshape(B, N, HEADS, d).transpose(1, 2) for z in (q, k, v))
        a = ((q @ k.transpose(-2, -1)) * d ** -0.5).softmax(-1) @ v
        a = a.transpose(1, 2).reshape(B, N, C) @ W[p + 'attn.proj.weight'].T + W[p + 'attn.proj.bias']
        t = t + W[p + 'ls1.gamma'] * a
        y = _rms(t, W[p + 'norm2.weight'])
        y = F.gelu(y @ W[p + 'mlp.fc1.weight'].T + W[p + 'mlp.fc1.bias'])
        t = t + W[p + 'ls2.gamma'] * (y @ W[p + 'mlp.fc2.weight'].T + W[p + 'mlp.fc2.bias'])
        if i in out_indices:
            outs.append(t[:, 1:].transpose(1, 2).reshape(B, C, h, w))
    return outs


def _ln_channels(x, w, b, eps=1e-6):
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    return w[:, None, None] * ((x - u) / torch.sqrt(s + eps)) + b[:, None, None]


def reference_pyramid(sd, feats):
    W = {k: v.float() for k, v in sd.items()}
    x1 = F.conv_transpose2d(feats[0], W['backbone.up1.0.weight'], W['backbone.up1.0.bias'], 2)
    x1 = F.gelu(_ln_channels(x1, W['backbone.up1.1.weight'], W['backbone.up1.1.bias']))
    x1 = F.conv_transpose2d(x1, W['backbone.up1.3.weight'], W['backbone.up1.3.bias'], 2)
    x2 = F.conv_transpose2d(feats[1], W['backbone.up2.0.weight'], W['backbone.up2.0.bias'], 2)
    return [x1, x2, feats[2], F.max_pool2d(feats[3], 2, 2)]


def reference_linear_head(sd, feat):
    x = F.batch_norm(feat, sd['decode_head.norm.running_mean'], sd['decode_head.norm.running_var'],
                     sd['decode_head.norm.weight'], sd['decode_head.norm.bias'], False, 0.0, 1e-5)
    return F.conv2d(x, sd['decode_head.conv_seg.weight'], sd['decode_head.conv_seg.bias'])


def _assert_rel(ours, ref, tol=1e-5, what=''):
    err = ((ours.float() - ref).abs().max() / ref.abs().max()).item()
    assert err <= tol, f'{what}: max relative error {err:.2e}'


# --------------------------------------------------------------------------- tests
@pytest.mark.parametrize('container', ['bare', 'module'])
@pytest.mark.parametrize('family', sorted(RECIPES))
def test_released_layout_converts_loads_strictly_and_computes_the_reference(
        family, container, tmp_path, capsys):
    rel = RECIPES[family]
    cfg, model_cfg = tiny_cfg(rel)
    sd = released_state_dict(rel)
    src = tmp_path / 'released.pth'
    torch.save(sd if container == 'bare' else {'module': sd}, src)
    dst = tmp_path / 'converted.pth'
    assert _converter().main([str(src), str(dst)]) == 0
    assert 'whole segmentation checkpoint' in capsys.readouterr().out

    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    model = MODELS.build(model_cfg)
    load_checkpoint(model, str(dst), map_location='cpu', strict=True)
    model.eval()
    # a fine-tuned pos_embed that is no resampling of a smaller grid survives exactly
    assert torch.equal(model.backbone.pos_embed.data, sd['backbone.pos_embed'])

    x = torch.randn(2, 3, CROP, CROP, generator=torch.Generator().manual_seed(1))
    depth = resolve_arch(cfg.model.backbone.arch)['num_layers']
    out_indices = list(cfg.model.backbone.out_indices)
    with torch.no_grad():
        ref_feats = reference_vit(sd, x, depth, out_indices)
        feats = model.extract_feat(x)
        logits = model.decode_head(list(feats))
        if model_cfg.decode_head.type == 'UPerHead':
            ref_feats = reference_pyramid(sd, ref_feats)
            ref_head = _build_head(model_cfg.decode_head)
            ref_head.load_state_dict({k[len('decode_head.'):]: v for k, v in sd.items()
                                      if k.startswith('decode_head.')})
            ref_logits = ref_head.eval()(ref_feats)
        else:
            ref_logits = reference_linear_head(sd, ref_feats[0])
    assert len(feats) == len(ref_feats)
    for i, (ours, ref) in enumerate(zip(feats, ref_feats)):
        assert ours.shape == ref.shape
        _assert_rel(ours, ref, what=f'{family} map {i}')
    _assert_rel(logits, ref_logits, what=f'{family} logits')


def test_converter_names_the_configs_a_release_fits(tmp_path, capsys):
    rel = RECIPES['full_tuning']
    src, dst = tmp_path / 'released.pth', tmp_path / 'converted.pth'
    torch.save(released_state_dict(rel), src)
    assert _converter().main([str(src), str(dst)]) == 0
    out = capsys.readouterr().out
    assert 'whole segmentation checkpoint (uper head, 150 classes' in out
    assert 'configs/segmentation/intern_vit_6b/full_tuning/' \
           'upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py' in out
    converted = torch.load(dst, weights_only=True)
    assert set(converted) == {'meta', 'state_dict'}
    assert 'neck.stages.0.1.weight' in converted['state_dict']
    assert not any(k.startswith('backbone.up') for k in converted['state_dict'])


def test_backbone_only_lists_what_it_drops(tmp_path, capsys):
    src, dst = tmp_path / 'released.pth', tmp_path / 'vit.pth'
    torch.save(released_state_dict(RECIPES['few_shot']), src)
    assert _converter().main([str(src), str(dst), '--backbone-only']) == 0
    out = capsys.readouterr().out
    assert 'dropped' in out and 'decode_head.conv_seg.weight' in out
    vit = torch.load(dst, weights_only=True)
    assert 'pos_embed' in vit and not any(k.startswith('decode_head') for k in vit)


# --------------------------------------------------------------------------- tools/test.py
def _tiny_test_config(tmp_path, rel, data_root, backbone_file, num_classes):
    arch = resolve_arch(Config.fromfile(osp.join(SEG, rel)).model.backbone.arch)
    arch = dict(arch, embed_dims=WIDTH, num_heads=HEADS, mlp_ratio=MLP, _delete_=True)
    pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='Resize', scale=(1000000, CROP), keep_ratio=True),
        dict(type='ResizeToMultiple', size_divisor=PATCH),
        dict(type='LoadAnnotations', reduce_zero_label=True),
        dict(type='PackSegInputs')]
    text = f"""_base_ = ['{osp.join(SEG, rel)}']
model = dict(
    data_preprocessor=dict(size=({CROP}, {CROP})),
    backbone=dict(arch={arch!r}, img_size={CROP}, frozen_dtype=None,
                  init_cfg=dict(type='Pretrained', checkpoint='{backbone_file}')),
    neck=dict(in_channels={WIDTH}),
    decode_head=dict(in_channels=[{WIDTH}] * 4, channels={CHANNELS}, num_classes={num_classes}),
    auxiliary_head=dict(in_channels={WIDTH}, channels={CHANNELS}, num_classes={num_classes}),
    test_cfg=dict(mode='slide', crop_size=({CROP}, {CROP}), stride=(36, 36)))
test_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='BaseSegDataset', data_root='{data_root}',
                 metainfo=dict(classes={tuple(f'c{i}' for i in range(num_classes))!r}),
                 data_prefix=dict(img_path='images/validation',
                                  seg_map_path='annotations/validation'),
                 img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True,
                 pipeline={pipeline!r}))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
"""
    path = tmp_path / 'tiny_head_tuning.py'
    path.write_text(text)
    return path


@pytest.mark.slow
def test_tools_test_evaluates_a_released_head_only_file(tmp_path, synthetic_ade):
    """tools/test.py CONFIG RELEASED.pth: the released frozen-backbone file (trained parts
    only, reference names) converted in memory, the ViT completed from init_cfg, an mIoU."""
    rel = RECIPES['head_tuning']
    num_classes = 4  # the fixture's 5 label values minus the reduced 0
    full = released_state_dict(rel)
    # the frozen backbone as the pretrained release (InternVL .pth layout: bare names)
    vit = {k[len('backbone.'):]: v for k, v in full.items()
           if k.startswith('backbone.') and not k.startswith(('backbone.up1', 'backbone.up2'))}
    torch.save(vit, tmp_path / 'vit.pth')
    released = {k: v for k, v in full.items() if k.startswith(('backbone.up1', 'backbone.up2'))
                or not k.startswith('backbone.')}
    # heads with the fixture's number of classes
    for prefix in ('decode_head', 'auxiliary_head'):
        for k in ('conv_seg.weight', 'conv_seg.bias'):
            shape = (num_classes, ) + tuple(released[f'{prefix}.{k}'].shape[1:])
            released[f'{prefix}.{k}'] = torch.randn(shape) * 0.1
    torch.save({'module': released}, tmp_path / 'released.pth')
    config = _tiny_test_config(tmp_path, rel, synthetic_ade, tmp_path / 'vit.pth', num_classes)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                           str(tmp_path / 'released.pth'), '--work-dir', str(tmp_path / 'work')],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'a released reference checkpoint (segmentation, uper head), converted in memory' in log
    assert 'backbone tensors taken from' in log and 'vit.pth' in log
    miou = re.search(r'mIoU: (\d+\.\d+)', log)
    assert miou is not None and 0.0 <= float(miou.group(1)) <= 100.0, log[-2000:]


def test_converter_reads_an_mmengine_training_checkpoint_without_trust_pickle(tmp_path):
    """What tools/train.py (or a stock MMEngine Runner) saves holds HistoryBuffers and numpy
    scalars besides the weights: the converter reads it weights-only through MMEngine's
    allow-list, no --trust-pickle needed."""
    import numpy as np
    from mmengine.logging import HistoryBuffer
    rel = RECIPES['few_shot']
    sd = released_state_dict(rel)
    sd = {k.replace('decode_head.norm.', 'decode_head.bn.'): v for k, v in sd.items()}  # ours
    buf = HistoryBuffer()
    buf.update(0.5)
    ckpt = {'meta': {'iter': 10, 'eta': np.float64(3.5)}, 'state_dict': sd,
            'message_hub': {'log_scalars': {'train/loss': buf}}}
    src, dst = tmp_path / 'iter_10.pth', tmp_path / 'converted.pth'
    torch.save(ckpt, src)
    # a fresh process: the allow-list must come from the converter, not from other tests
    proc = subprocess.run([sys.executable, CONVERTER, str(src), str(dst)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'whole segmentation checkpoint (linear head' in proc.stdout
    assert set(torch.load(dst, weights_only=True)['state_dict']) == set(sd)


@pytest.mark.slow
def test_tools_test_evaluates_a_released_full_tuning_file_through_fsdp2(tmp_path, synthetic_ade):
    """The full-tuning config trains and tests with FSDP2 (FlexibleRunner): tools/test.py hands
    the strategy a converted copy of the released file."""
    rel = RECIPES['full_tuning']
    num_classes = 4
    released = released_state_dict(rel)
    for prefix in ('decode_head', 'auxiliary_head'):
        for k in ('conv_seg.weight', 'conv_seg.bias'):
            shape = (num_classes, ) + tuple(released[f'{prefix}.{k}'].shape[1:])
            released[f'{prefix}.{k}'] = torch.randn(shape) * 0.1
    torch.save(released, tmp_path / 'released.pth')
    vit = {k[len('backbone.'):]: v for k, v in released.items()
           if k.startswith('backbone.') and not k.startswith(('backbone.up1', 'backbone.up2'))}
    torch.save(vit, tmp_path / 'vit.pth')
    config = _tiny_test_config(tmp_path, rel, synthetic_ade, tmp_path / 'vit.pth', num_classes)
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                           str(tmp_path / 'released.pth'), '--work-dir', str(tmp_path / 'work')],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert 'converted in memory' in log and 'converted copy written to' in log
    assert (tmp_path / 'work' / 'converted_released.pth').is_file()
    assert re.search(r'mIoU: (\d+\.\d+)', log), log[-2000:]
    # our own single file (as ExportConsolidatedHook writes) goes to the strategy as it is, and
    # the load is strict: a file missing a head tensor is refused, naming it
    own = torch.load(tmp_path / 'work' / 'converted_released.pth', weights_only=True)
    del own['state_dict']['decode_head.conv_seg.bias']
    torch.save(own, tmp_path / 'incomplete.pth')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), str(config),
                           str(tmp_path / 'incomplete.pth'), '--work-dir',
                           str(tmp_path / 'work2')], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    log = proc.stdout + proc.stderr
    assert proc.returncode != 0 and 'decode_head.conv_seg.bias' in log, log[-3000:]
    assert 'converted in memory' not in log
