"""Layer-wise lr decay: layer ids and parameter groups as pure functions of names."""
import pytest
import torch
import torch.nn as nn

from backbones import InternViT
from engine.optimizers.layer_decay import (InternViTLayerDecayOptimizerConstructor, build_param_groups,
                                   get_layer_id, norm_param_names)

TINY = dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=2.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


@pytest.mark.parametrize('name,expected', [
    ('patch_embed.proj.weight', 0),
    ('cls_token', 0),
    ('pos_embed', 0),
    ('blocks.0.attn.qkv.weight', 1),
    ('blocks.47.mlp.fc2.bias', 48),
    ('backbone.pos_embed', 0),
    ('backbone.blocks.11.ls1.gamma', 12),
    ('module.backbone.blocks.3.norm1.weight', 4),
    ('backbone.blocks.5._fsdp_wrapped_module.attn.proj.weight', 6),
    ('neck.stages.0.0.weight', 49),
    ('decode_head.conv_seg.weight', 49),
    ('auxiliary_head.convs.0.conv.weight', 49),
    ('backbone.spm.stem.0.weight', 49),  # adapter modules sit on top of the ViT
    ('backbone.interactions.0.injector.gamma', 49),
    ('decode_head.blocks.0.weight', 49),  # "blocks" outside the backbone is not a ViT block
])
def test_get_layer_id(name, expected):
    assert get_layer_id(name, 48) == expected


def test_get_layer_id_rejects_blocks_beyond_num_layers():
    with pytest.raises(ValueError, match='beyond num_layers=45'):
        get_layer_id('backbone.blocks.47.attn.qkv.weight', 45)


def _named(shapes):
    return [(n, nn.Parameter(torch.zeros(s))) for n, s in shapes]


def _by_name(groups, named):
    names = {id(p): n for n, p in named}
    return {names[id(p)]: g for g in groups for p in g['params']}


def test_lr_scale_and_weight_decay_per_parameter():
    named = _named([
        ('backbone.cls_token', (1, 1, 8)), ('backbone.pos_embed', (1, 5, 8)),
        ('backbone.patch_embed.proj.weight', (8, 3, 2, 2)),
        ('backbone.patch_embed.proj.bias', (8, )),
        ('backbone.blocks.0.norm1.weight', (8, )), ('backbone.blocks.0.attn.qkv.weight', (24, 8)),
        ('backbone.blocks.0.ls1.gamma', (8, )), ('backbone.blocks.1.mlp.fc1.weight', (16, 8)),
        ('backbone.blocks.1.mlp.fc1.bias', (16, )),
        ('decode_head.conv_seg.weight', (3, 8, 1, 1)), ('decode_head.conv_seg.bias', (3, )),
    ])
    groups = build_param_groups(named, base_lr=1.0, weight_decay=0.05, num_layers=2,
                                decay_rate=0.5)
    g = _by_name(groups, named)
    # lr scale = rate ** (num_layers + 1 - layer_id): stem 0.5**3, block0 0.5**2, block1 0.5, head 1
    assert g['backbone.pos_embed']['lr'] == pytest.approx(0.125)
    assert g['backbone.patch_embed.proj.weight']['lr'] == pytest.approx(0.125)
    assert g['backbone.blocks.0.attn.qkv.weight']['lr'] == pytest.approx(0.25)
    assert g['backbone.blocks.1.mlp.fc1.weight']['lr'] == pytest.approx(0.5)
    assert g['decode_head.conv_seg.weight']['lr'] == pytest.approx(1.0)
    no_decay = {n for n, grp in g.items() if grp['weight_decay'] == 0}
    assert no_decay == {'backbone.cls_token', 'backbone.pos_embed',
                        'backbone.patch_embed.proj.bias', 'backbone.blocks.0.norm1.weight',
                        'backbone.blocks.0.ls1.gamma', 'backbone.blocks.1.mlp.fc1.bias',
                        'decode_head.conv_seg.bias'}
    assert all(grp['weight_decay'] == 0.05 for n, grp in g.items() if n not in no_decay)
    # One group per (layer, decay) pair, ordered by layer.
    assert [grp['layer_id'] for grp in groups] == sorted(grp['layer_id'] for grp in groups)
    assert len({(grp['layer_id'], grp['weight_decay']) for grp in groups}) == len(groups)


def test_frozen_parameters_get_no_group():
    named = _named([('backbone.blocks.0.attn.qkv.weight', (4, 4)),
                    ('decode_head.conv_seg.weight', (2, 4, 1, 1))])
    named[0][1].requires_grad = False
    groups = build_param_groups(named, 1.0, 0.05, 1, 0.9)
    params = [p for grp in groups for p in grp['params']]
    assert len(params) == 1 and params[0] is named[1][1]


def test_no_decay_names_replace_the_1d_rule():
    """Under FSDP every parameter is a 1-D shard: names decide, not shapes."""
    named = _named([('backbone.blocks.0._fsdp_wrapped_module.attn.qkv.weight', (12, )),
                    ('backbone.blocks.0._fsdp_wrapped_module.norm1.weight', (4, ))])
    groups = build_param_groups(named, 1.0, 0.05, 1, 0.9, no_decay_names={
        'backbone.blocks.0._fsdp_wrapped_module.norm1.weight'})
    g = _by_name(groups, named)
    assert g['backbone.blocks.0._fsdp_wrapped_module.attn.qkv.weight']['weight_decay'] == 0.05
    assert g['backbone.blocks.0._fsdp_wrapped_module.norm1.weight']['weight_decay'] == 0


def test_invalid_decay_rate():
    with pytest.raises(ValueError, match=r'in \(0, 1\]'):
        build_param_groups([], 1.0, 0.0, 2, 1.5)


class _Seg(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = InternViT(arch=TINY, img_size=56)
        self.decode_head = nn.Sequential(nn.Conv2d(64, 8, 1), nn.BatchNorm2d(8))


def test_norm_param_names_by_module_type():
    names = norm_param_names(_Seg())
    assert 'backbone.blocks.0.norm1.weight' in names  # RMSNorm
    assert 'backbone.blocks.0.attn.q_norm.weight' in names
    assert 'backbone.blocks.3.ls2.gamma' in names  # LayerScale
    assert 'decode_head.1.weight' in names and 'decode_head.1.bias' in names  # BatchNorm
    assert 'backbone.blocks.0.attn.qkv.weight' not in names


def test_constructor_builds_optimizer_with_layer_groups():
    model = _Seg()
    ctor = InternViTLayerDecayOptimizerConstructor(
        dict(optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05)),
        paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.95))
    wrapper = ctor(model)
    groups = wrapper.optimizer.param_groups
    assert type(wrapper.optimizer).__name__ == 'AdamW'
    ids = {g['layer_id'] for g in groups}
    assert ids == {0, 1, 2, 3, 4, 5}
    head = [g for g in groups if g['layer_id'] == 5 and g['weight_decay'] > 0][0]
    stem = [g for g in groups if g['layer_id'] == 0 and g['weight_decay'] > 0][0]
    assert head['lr'] == pytest.approx(4e-5)
    assert stem['lr'] == pytest.approx(4e-5 * 0.95 ** 5)
    n_params = sum(len(g['params']) for g in groups)
    assert n_params == len(list(model.parameters()))


def test_constructor_through_registry_and_frozen_backbone():
    from mmengine.optim import build_optim_wrapper
    model = _Seg()
    model.backbone._freeze()
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
        constructor='InternViTLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(num_layers=4, layer_decay_rate=0.9)))
    params = [p for g in wrapper.optimizer.param_groups for p in g['params']]
    # Only the head: conv weight and bias, BN weight and bias; all at layer num_layers + 1.
    assert len(params) == 4
    assert {g['layer_id'] for g in wrapper.optimizer.param_groups} == {5}


def test_constructor_requires_its_keys():
    with pytest.raises(ValueError, match=r"lacks \['layer_decay_rate'\]"):
        InternViTLayerDecayOptimizerConstructor(dict(optimizer=dict(type='AdamW', lr=1.0)),
                                                dict(num_layers=4))
    with pytest.raises(ValueError, match='unknown paramwise_cfg keys'):
        InternViTLayerDecayOptimizerConstructor(
            dict(optimizer=dict(type='AdamW', lr=1.0)),
            dict(num_layers=4, layer_decay_rate=0.9, decay_type='stage_wise'))
