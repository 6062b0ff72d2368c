"""SimpleFeaturePyramid: scales relative to the token grid, any patch size, no SyncBN."""
import pytest
import torch
import torch.nn as nn

from backbones import InternViT, SimpleFeaturePyramid
from backbones.pyramid import LayerNorm2d, build_norm_2d

TINY = dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=2.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


def test_registered_in_root_registry():
    from mmengine.registry import MODELS
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=32))
    assert isinstance(neck, SimpleFeaturePyramid)


@pytest.mark.parametrize('hw', [(8, 8), (6, 10)])
def test_output_shapes_four_maps(hw):
    neck = SimpleFeaturePyramid(in_channels=32)
    x = [torch.randn(2, 32, *hw) for _ in range(4)]
    outs = neck(x)
    h, w = hw
    assert [tuple(o.shape) for o in outs] == [(2, 32, 4 * h, 4 * w), (2, 32, 2 * h, 2 * w),
                                             (2, 32, h, w), (2, 32, h // 2, w // 2)]


def test_single_map_is_replicated_and_identity_level_unchanged():
    neck = SimpleFeaturePyramid(in_channels=16)
    x = torch.randn(1, 16, 4, 4)
    outs = neck((x, ))
    assert len(outs) == 4
    assert torch.equal(outs[2], x)
    assert torch.equal(outs[3], nn.functional.max_pool2d(x, 2))


def test_projection_to_out_channels():
    neck = SimpleFeaturePyramid(in_channels=16, out_channels=8)
    outs = neck([torch.randn(1, 16, 4, 4)] * 4)
    assert all(o.shape[1] == 8 for o in outs)


def test_custom_rescales():
    neck = SimpleFeaturePyramid(in_channels=8, rescales=(8, 1, 0.25))
    outs = neck([torch.randn(1, 8, 8, 8)])
    assert [o.shape[-1] for o in outs] == [64, 8, 2]
    with pytest.raises(ValueError, match='powers of two'):
        SimpleFeaturePyramid(in_channels=8, rescales=(3, 1))


def test_wrong_number_or_width_of_inputs():
    neck = SimpleFeaturePyramid(in_channels=8)
    with pytest.raises(ValueError, match='got 2 maps for 4 rescales'):
        neck([torch.randn(1, 8, 4, 4)] * 2)
    with pytest.raises(ValueError, match=r'expected \(B, 8, H, W\)'):
        neck([torch.randn(1, 6, 4, 4)])


def test_4x_stage_is_deconv_norm_gelu_deconv_and_no_syncbn_by_default():
    neck = SimpleFeaturePyramid(in_channels=8)
    kinds = [type(m) for m in neck.stages[0]]
    assert kinds == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.GELU, nn.ConvTranspose2d]
    assert [type(m) for m in neck.stages[1]] == [nn.ConvTranspose2d]
    assert isinstance(neck.stages[2], nn.Identity)
    assert isinstance(neck.stages[3], nn.MaxPool2d)
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in neck.modules())
    # Trains on one CPU process (SyncBN would need a process group).
    neck.train()
    sum(o.sum() for o in neck([torch.randn(2, 8, 4, 4)])).backward()


@pytest.mark.parametrize('cfg,cls', [(dict(type='BN'), nn.BatchNorm2d),
                                     (dict(type='SyncBN'), nn.SyncBatchNorm),
                                     (dict(type='LN'), LayerNorm2d),
                                     (dict(type='GN', num_groups=2), nn.GroupNorm)])
def test_norm_types(cfg, cls):
    assert isinstance(build_norm_2d(cfg, 8), cls)
    neck = SimpleFeaturePyramid(in_channels=8, norm_cfg=cfg)
    assert isinstance(neck.stages[0][1], cls)


def test_unknown_norm_and_frozen_norm():
    with pytest.raises(ValueError, match="must be one of"):
        build_norm_2d(dict(type='IN'), 8)
    norm = build_norm_2d(dict(type='BN', requires_grad=False), 8)
    assert not any(p.requires_grad for p in norm.parameters())


def test_layernorm2d_normalises_channels():
    ln = LayerNorm2d(8)
    y = ln(torch.randn(2, 8, 3, 3) * 5 + 3)
    assert torch.allclose(y.mean(1), torch.zeros(2, 3, 3), atol=1e-5)


@pytest.mark.parametrize('patch_size', [14, 16])
def test_with_intern_vit_strides_follow_the_patch_size(patch_size):
    """Strides are patch/4, patch/2, patch, 2*patch: nothing assumes patch 16."""
    vit = InternViT(arch=TINY, img_size=112, patch_size=patch_size, out_indices=[0, 1, 2, 3])
    neck = SimpleFeaturePyramid(in_channels=64)
    img = torch.randn(1, 3, 112, 112)
    outs = neck(vit(img))
    grid = -(-112 // patch_size)
    assert [o.shape[-1] for o in outs] == [4 * grid, 2 * grid, grid, grid // 2]
