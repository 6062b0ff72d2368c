"""InternViTAdapter computes what InternVL-MMDetSeg's InternViT adapter computes (issue 13).

Each difference from the original ViT-Adapter is checked against a computation written here in
plain torch from the reference's description: no cls token reaches the ViT blocks; the outputs
are the extractor maps plus the final ViT map (bilinear x4 / x2 / x1 / x0.5) through channel
LayerNorms (eps 1e-6, float32); the injector / extractor LayerNorms have eps 1e-5; a 14 px
kernel loaded into a 16 px stem is its plain bicubic resize; ``pos_embed`` is held at the crop
grid, one bicubic resize of the checkpoint's; and the recipe's parameter groups follow the
reference's decay rule.
"""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from backbones import InternViT, InternViTAdapter
from backbones.ms_deform_attn import MSDeformAttn

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
RECIPE = osp.join(REPO, 'configs', 'segmentation', 'intern_vit_6b', 'vit_adapter',
                  'upernet_intern-vit-6b-adapter_8xb2-80k_ade20k-512x512.py')
TINY = dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
ONE_BLOCK_EACH = [[0, 0], [1, 1], [2, 2], [3, 3]]
# the reference's knobs at tiny width (defaults of InternViTAdapter otherwise)
ADAPTER = dict(interaction_indexes=ONE_BLOCK_EACH, conv_inplane=16, deform_num_heads=4,
               deform_ratio=0.25, cffn_ratio=0.25, n_points=4)


def build(img_size=128, patch_size=16, **kwargs):
    torch.manual_seed(0)
    model = InternViTAdapter(arch=TINY, img_size=img_size, patch_size=patch_size,
                             **dict(ADAPTER, **kwargs))
    model.init_weights()
    return model


def perturb_(model, seed=1):
    """Non-trivial adapter weights: injector gamma, offsets and attention weights away from
    their zero init, norm affines away from (1, 0), so that no path hides behind a zero."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if model.is_adapter_param(name):
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def channel_layer_norm(x, weight, bias, eps):
    """The reference's channels-first LayerNorm: float32 mean / biased variance over C."""
    x = x.float()
    u = x.mean(1, keepdim=True)
    s = (x - u).pow(2).mean(1, keepdim=True)
    x = (x - u) / torch.sqrt(s + eps)
    return weight.float()[:, None, None] * x + bias.float()[:, None, None]


def save_vit_checkpoint(path, img_size, patch_size=14, seed=0):
    """A random InternViT checkpoint (InternVL .pth names) of another grid and patch size."""
    torch.manual_seed(seed)
    vit = InternViT(arch=TINY, img_size=img_size, patch_size=patch_size)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in vit.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05 + (1.0 if p.ndim == 1 else 0.0))
    sd = vit.state_dict()
    torch.save(sd, path)
    return sd


# --------------------------------------------------------------------------- 1. no cls token
def test_no_cls_token_reaches_the_blocks():
    """The blocks see exactly the h*w patch tokens; the first one gets the patch embedding plus
    the patch slots of pos_embed (the injector's gamma starts at 0)."""
    model = build().eval()
    assert model.cls_token is None and 'cls_token' not in model.state_dict()
    assert model.pos_embed.shape == (1, 1 + 8 * 8, 64)  # the cls slot stays, unused
    seen = []
    for blk in model.blocks:
        blk.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        model(x)
    assert [t.shape for t in seen] == [(2, 8 * 8, 64)] * 4
    w, b = model.patch_embed.proj.weight, model.patch_embed.proj.bias
    tokens = F.conv2d(x, w, b, stride=16).flatten(2).transpose(1, 2)
    torch.testing.assert_close(seen[0], tokens + model.pos_embed[:, 1:])


def test_cls_token_option_prepends_it_to_the_blocks():
    model = build(with_cls_token=True).eval()
    assert model.cls_token is not None
    seen = []
    model.blocks[2].register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 128, 128))
    assert seen[0].shape == (1, 1 + 8 * 8, 64)
    assert [tuple(o.shape[-2:]) for o in outs] == [(32, 32), (16, 16), (8, 8), (4, 4)]


# --------------------------------------------------------------------------- 2. the outputs
def _capture(model, x):
    """Run the model and record the SPM's stride-4 map and every interaction's outputs."""
    rec = {'inter': []}
    hooks = [model.spm.register_forward_hook(lambda m, a, out: rec.__setitem__('spm', out))]
    for layer in model.interactions:
        hooks.append(layer.register_forward_hook(lambda m, a, out: rec['inter'].append(out)))
    with torch.no_grad():
        outs = model(x)
    for h in hooks:
        h.remove()
    return outs, rec


def _expected(model, rec, vit_maps, B, H, W):
    C = model.embed_dims
    c = rec['inter'][-1][1]  # the SPM tokens after the last extractor
    shapes = [(H // s, W // s) for s in (8, 16, 32)]
    c2, c3, c4 = [t.transpose(1, 2).reshape(B, C, *hw)
                  for t, hw in zip(c.split([h * w for h, w in shapes], 1), shapes)]
    c1 = rec['spm'][0] + F.conv_transpose2d(c2, model.up.weight, model.up.bias, stride=2)
    fused = [m + F.interpolate(v, scale_factor=f, mode='bilinear', align_corners=False)
             for m, v, f in zip((c1, c2, c3, c4), vit_maps, (4, 2, 1, 0.5))]
    norms = (model.norm1, model.norm2, model.norm3, model.norm4)
    return [channel_layer_norm(m, n.weight, n.bias, 1e-6) for m, n in zip(fused, norms)]


def test_outputs_are_extractor_maps_plus_the_final_vit_map_through_channel_layernorms():
    model = perturb_(build()).eval()
    B, H, W = 2, 128, 128
    outs, rec = _capture(model, torch.randn(B, 3, H, W))
    final = rec['inter'][-1][0].transpose(1, 2).reshape(B, 64, H // 16, W // 16)
    for got, want in zip(outs, _expected(model, rec, [final] * 4, B, H, W)):
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


def test_interactions_option_adds_each_interaction_output_to_its_level():
    """The original ViT-Adapter fusion stays available: interaction i's tokens to level i."""
    model = perturb_(build(vit_feature_source='interactions')).eval()
    B, H, W = 1, 128, 128
    outs, rec = _capture(model, torch.randn(B, 3, H, W))
    maps = [out[0].transpose(1, 2).reshape(B, 64, H // 16, W // 16) for out in rec['inter']]
    for got, want in zip(outs, _expected(model, rec, maps, B, H, W)):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)
    with pytest.raises(ValueError, match='vit_feature_source'):
        build(vit_feature_source='last')


def test_spm_and_output_norms_are_float32_channel_layernorms():
    model = perturb_(build())
    norms = [model.spm.stem[1], model.spm.stem[4], model.spm.stem[7], model.spm.conv2[1],
             model.spm.conv3[1], model.spm.conv4[1], model.norm1, model.norm2, model.norm3,
             model.norm4]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(k.endswith(('running_mean', 'running_var', 'num_batches_tracked'))
                   for k in model.state_dict())
    x = torch.randn(2, 16, 5, 7) * 3 + 1
    for norm in norms[:3]:  # 16 channels in the stem
        torch.testing.assert_close(norm(x), channel_layer_norm(x, norm.weight, norm.bias, 1e-6))
        # a bf16 map is normalised in float32 (then rounded once), as the reference does
        xb = x.bfloat16()
        torch.testing.assert_close(
            norm(xb), channel_layer_norm(xb, norm.weight, norm.bias, 1e-6).bfloat16())


# --------------------------------------------------------------------------- 3. eps 1e-5
def test_injector_and_extractor_layernorms_have_eps_1e5():
    model = build()
    lns = [m for m in model.interactions.modules() if isinstance(m, nn.LayerNorm)]
    # 2 in each injector, 3 in each extractor (query, feature, ConvFFN) and 2 extra extractors
    assert len(lns) == 4 * 2 + 4 * 3 + 2 * 3
    assert {m.eps for m in lns} == {1e-5}
    # numerically: a small-variance token, where eps matters
    q = model.interactions[0].injector.query_norm
    x = 1e-3 * torch.randn(3, 64)
    want = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True)
                                                       + 1e-5)
    torch.testing.assert_close(q(x), want * q.weight + q.bias)
    # the original ViT-Adapter's 1e-6 is an option
    assert {m.eps for m in build(interaction_norm_eps=1e-6).interactions.modules()
            if isinstance(m, nn.LayerNorm)} == {1e-6}


# --------------------------------------------------------------------------- 4. loading
def test_14px_kernel_loaded_into_a_16px_stem_is_its_bicubic_resize(tmp_path):
    path = str(tmp_path / 'vit14.pth')
    sd = save_vit_checkpoint(path, img_size=112, patch_size=14)
    model = build(init_cfg=dict(type='Pretrained', checkpoint=path))
    want = F.interpolate(sd['patch_embed.proj.weight'], size=(16, 16), mode='bicubic',
                         align_corners=False)  # no rescaling
    torch.testing.assert_close(model.patch_embed.proj.weight, want)
    torch.testing.assert_close(model.patch_embed.proj.bias, sd['patch_embed.proj.bias'])
    torch.testing.assert_close(model.blocks[3].attn.qkv.weight, sd['blocks.3.attn.qkv.weight'])


def test_pos_embed_at_a_512_crop_is_one_bicubic_resize_of_a_224_14_checkpoint(tmp_path):
    path = str(tmp_path / 'vit224.pth')
    sd = save_vit_checkpoint(path, img_size=224, patch_size=14)
    assert sd['pos_embed'].shape == (1, 1 + 16 * 16, 64)
    model = build(img_size=512, init_cfg=dict(type='Pretrained', checkpoint=path))
    assert model.pos_embed.shape == (1, 1 + 32 * 32, 64)
    grid = sd['pos_embed'][:, 1:].reshape(1, 16, 16, 64).permute(0, 3, 1, 2)
    want = F.interpolate(grid, size=(32, 32), mode='bicubic', align_corners=False)
    want = want.permute(0, 2, 3, 1).reshape(1, 32 * 32, 64)
    torch.testing.assert_close(model.pos_embed[:, 1:], want)
    torch.testing.assert_close(model.pos_embed[:, :1], sd['pos_embed'][:, :1])
    # a 512 input uses it as it is (no second resampling at run time)
    assert torch.equal(model.get_pos_embed((32, 32)), model.pos_embed[:, 1:])


# --------------------------------------------------------------------------- 5. the recipe
def _tiny_recipe(img_size=512):
    """The adapter recipe config's model with a tiny backbone and heads (4 blocks, 64 wide)."""
    from mmengine.config import Config
    cfg = Config.fromfile(RECIPE)
    m = copy.deepcopy(cfg.model)
    m.backbone.update(arch=TINY, img_size=img_size, interaction_indexes=ONE_BLOCK_EACH,
                      deform_num_heads=4, conv_inplane=16, with_cp=False)
    m.backbone.pop('init_cfg')
    m.decode_head.update(in_channels=[64] * 4, channels=16)
    m.auxiliary_head.update(in_channels=64, channels=16)
    m.data_preprocessor.size = (64, 64)
    m.test_cfg = dict(mode='slide', crop_size=(64, 64), stride=(43, 43))
    return cfg, m


def reference_no_decay(name, param):
    """The reference constructor's rule: 1-D parameters and biases get no weight decay."""
    return param.ndim == 1 or name.endswith('.bias')


def test_recipe_parameter_groups_follow_the_reference_decay_rule():
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    cfg, model_cfg = _tiny_recipe()
    init_default_scope('mmseg')
    model = MODELS.build(model_cfg)
    model.init_weights()
    ow = copy.deepcopy(cfg.optim_wrapper)
    ow.type = 'OptimWrapper'  # bf16 autocast (AmpOptimWrapper) is GPU-only in MMEngine
    ow.pop('dtype', None)
    groups = build_optim_wrapper(model, ow).optimizer.param_groups
    where = {id(p): g for g in groups for p in g['params']}
    named = dict(model.named_parameters())
    assert not any(id(p) in where for n, p in named.items() if not p.requires_grad)
    trainable = {n: p for n, p in named.items() if p.requires_grad}
    assert all(n.startswith(('backbone.', 'decode_head.', 'auxiliary_head.')) for n in trainable)
    assert not any(n.startswith(('backbone.blocks.', 'backbone.patch_embed', 'backbone.pos'))
                   for n in trainable)  # the ViT is frozen
    for n, p in trainable.items():
        g = where[id(p)]
        assert g['lr'] == pytest.approx(4e-5) and g.get('lr_scale', 1.0) == pytest.approx(1.0), n
        assert g['weight_decay'] == (0.0 if reference_no_decay(n, p) else 0.05), n
    wd = {n: where[id(named[n])]['weight_decay'] for n in (
        'backbone.interactions.0.injector.attn.sampling_offsets.bias',  # adapter bias
        'backbone.norm1.weight', 'backbone.spm.stem.1.weight',  # norm weights
        'backbone.interactions.1.injector.gamma',
        'backbone.level_embed', 'backbone.spm.stem.0.weight', 'backbone.up.weight',
        'backbone.interactions.3.extractor.ffn.dwconv.dwconv.weight')}
    assert wd == {'backbone.interactions.0.injector.attn.sampling_offsets.bias': 0.0,
                  'backbone.norm1.weight': 0.0, 'backbone.spm.stem.1.weight': 0.0,
                  'backbone.interactions.1.injector.gamma': 0.0,
                  'backbone.level_embed': 0.05, 'backbone.spm.stem.0.weight': 0.05,
                  'backbone.up.weight': 0.05,
                  'backbone.interactions.3.extractor.ffn.dwconv.dwconv.weight': 0.05}


def reference_adapter_keys(depth, interaction_indexes):
    """Backbone state-dict names of InternVL-MMDetSeg's InternViTAdapter (mmseg), written out
    from its modules: the ViT without cls_token, then level_embed, spm, interactions, up and
    the four channel LayerNorms (no BN buffers)."""
    keys = ['pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']
    for i in range(depth):
        keys += [f'blocks.{i}.{k}' for k in (
            'norm1.weight', 'attn.qkv.weight', 'attn.q_norm.weight', 'attn.k_norm.weight',
            'attn.proj.weight', 'attn.proj.bias', 'ls1.gamma', 'norm2.weight',
            'mlp.fc1.weight', 'mlp.fc1.bias', 'mlp.fc2.weight', 'mlp.fc2.bias', 'ls2.gamma')]
    keys.append('level_embed')
    keys += [f'spm.stem.{i}.weight' for i in (0, 3, 6)]
    keys += [f'spm.stem.{i}.{k}' for i in (1, 4, 7) for k in ('weight', 'bias')]
    keys += [f'spm.conv{i}.0.weight' for i in (2, 3, 4)]
    keys += [f'spm.conv{i}.1.{k}' for i in (2, 3, 4) for k in ('weight', 'bias')]
    keys += [f'spm.fc{i}.{k}' for i in (1, 2, 3, 4) for k in ('weight', 'bias')]
    attn = [f'attn.{m}.{k}' for m in ('sampling_offsets', 'attention_weights', 'value_proj',
                                      'output_proj') for k in ('weight', 'bias')]
    extractor = attn + [f'{m}.{k}' for m in ('query_norm', 'feat_norm', 'ffn.fc1',
                                             'ffn.dwconv.dwconv', 'ffn.fc2', 'ffn_norm')
                        for k in ('weight', 'bias')]
    for i in range(len(interaction_indexes)):
        p = f'interactions.{i}.'
        keys += [p + 'injector.gamma'] + [p + f'injector.{m}.{k}' for m in (
            'query_norm', 'feat_norm') for k in ('weight', 'bias')]
        keys += [p + 'injector.' + k for k in attn] + [p + 'extractor.' + k for k in extractor]
        if i == len(interaction_indexes) - 1:
            keys += [p + f'extra_extractors.{j}.{k}' for j in (0, 1) for k in extractor]
    keys += ['up.weight', 'up.bias'] + [f'norm{i}.{k}' for i in (1, 2, 3, 4)
                                        for k in ('weight', 'bias')]
    return keys


def test_reference_adapter_state_dict_names_match_one_to_one():
    """A reference adapter checkpoint's backbone.* names need no renaming: they are ours."""
    model = build(img_size=512)
    ours = set(model.state_dict())
    ref = set(reference_adapter_keys(4, ONE_BLOCK_EACH))
    assert ours == ref, (sorted(ours - ref), sorted(ref - ours))
    assert model.state_dict()['pos_embed'].shape == (1, 1 + 32 * 32, 64)  # as saved at 512


def test_reference_layout_checkpoint_converts_and_loads_strictly(tmp_path):
    """A tiny reference-layout adapter segmentation checkpoint (``module`` wrapper, fp16 as
    DeepSpeed saves it, ``backbone.*`` / ``decode_head.*`` / ``auxiliary_head.*``) converts
    with the CLI, loads strictly into the adapter recipe (tiny overrides), and predicts."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    from tools.model_converters.internvit2mmseg import main as convert

    _, model_cfg = _tiny_recipe()
    init_default_scope('mmseg')
    model = MODELS.build(model_cfg)
    model.init_weights()
    shapes = {k: v.shape for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(3)
    backbone = {'backbone.' + k: torch.randn(shapes['backbone.' + k], generator=g).half()
                for k in reference_adapter_keys(4, ONE_BLOCK_EACH)}
    heads = {k: (torch.randn(s, generator=g) if k.endswith(('weight', 'bias', 'mean', 'var'))
                 else torch.zeros(s, dtype=torch.long)) for k, s in shapes.items()
             if k.startswith(('decode_head.', 'auxiliary_head.'))}
    for k in heads:
        if k.endswith('running_var'):
            heads[k] = heads[k].abs() + 0.5
    src, dst = str(tmp_path / 'ref_adapter.pth'), str(tmp_path / 'converted.pth')
    torch.save({'module': {**backbone, **heads}}, src)
    assert convert([src, dst]) == 0
    load_checkpoint(model, dst, map_location='cpu', strict=True)
    sd = model.state_dict()
    for k in ('backbone.level_embed', 'backbone.interactions.3.extra_extractors.1.ffn_norm.bias',
              'backbone.pos_embed', 'backbone.blocks.2.ls1.gamma'):
        torch.testing.assert_close(sd[k], backbone[k].to(sd[k].dtype))
    model.eval()
    sample = SegDataSample()
    sample.set_metainfo(dict(img_shape=(96, 128), ori_shape=(96, 128)))
    with torch.no_grad():
        pred = model.test_step(dict(inputs=[torch.randint(0, 256, (3, 96, 128),
                                                          dtype=torch.uint8)],
                                    data_samples=[sample]))
    assert pred[0].pred_sem_seg.data.shape == (1, 96, 128)


def test_recipe_adapter_runs_with_deformable_attention_in_bf16_on_cpu():
    """The recipe's tiny model forward under CPU bf16 autocast and with the ViT held in bf16."""
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    _, model_cfg = _tiny_recipe(img_size=128)
    init_default_scope('mmseg')
    backbone = MODELS.build(model_cfg.backbone)
    backbone.init_weights()
    assert backbone.blocks[0].attn.qkv.weight.dtype == torch.bfloat16
    assert backbone.spm.fc1.weight.dtype == torch.float32
    backbone.eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        outs = backbone(x)
    assert [tuple(o.shape) for o in outs] == [(1, 64, 32, 32), (1, 64, 16, 16), (1, 64, 8, 8),
                                              (1, 64, 4, 4)]
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)
    assert any(isinstance(m, MSDeformAttn) for m in backbone.modules())
