"""The backbone options of the two InternViT-6B detection recipes, each checked against a
computation written here in plain torch from the reference's description (not by calling our
modules twice): window attention over zero-padded, unmasked windows (and our masked mode), no
cls token with block 47 fed to every pyramid level, the 14 -> 16 px stem kernel and the
position-embedding grids of both recipes."""
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config

from ._tiny import DET_CONFIG_DIR, TINY_WIDTH, tiny_model_cfg

HEAD_TUNING = osp.join(DET_CONFIG_DIR, 'intern_vit_6b', 'head_tuning',
                       'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-1333x800.py')
FULL_TUNING = osp.join(DET_CONFIG_DIR, 'intern_vit_6b', 'full_tuning',
                       'mask-rcnn_intern-vit-6b_fpn_8xb2-1x_coco-ms-1024x1024.py')
# 6B flavour at tiny width: RMSNorm, QK-norm over the full width, no qkv bias, LayerScale.
TINY_6B = dict(embed_dims=TINY_WIDTH, num_layers=4, num_heads=4, mlp_ratio=4.0,
               norm_type='rms_norm', qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
EPS = 1e-6


@pytest.fixture(autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _randomize(module: torch.nn.Module, seed: int = 0) -> None:
    """Random values in every parameter (norm weights, LayerScale, biases too), so that no
    term of the computation can hide behind ones or zeros."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.ndim == 1 else 0.0))


def _rms(x, weight):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + EPS) * weight


def _attend(tokens, attn, key_valid=None):
    """Multi-head attention of (N, C) tokens with the weights of ``attn``, written out:
    qkv projection, RMS QK-norm over the full width, scaled softmax over the keys (only the
    ``key_valid`` ones when given), value mixing. Output projection not applied."""
    C = tokens.shape[-1]
    h = attn.num_heads
    d = C // h
    qkv = tokens @ attn.qkv.weight.T
    if attn.qkv.bias is not None:
        qkv = qkv + attn.qkv.bias
    q, k, v = qkv[:, :C], qkv[:, C:2 * C], qkv[:, 2 * C:]
    q, k = _rms(q, attn.q_norm.weight), _rms(k, attn.k_norm.weight)
    q, k, v = (t.reshape(-1, h, d).transpose(0, 1) for t in (q, k, v))  # (h, N, d)
    logits = q @ k.transpose(1, 2) / math.sqrt(d)
    if key_valid is not None:
        logits = logits.masked_fill(~key_valid[None, None, :], float('-inf'))
    return (logits.softmax(-1) @ v).transpose(0, 1).reshape(-1, C)


def _reference_window_attention(normed, hw, ws, attn, mask_padding):
    """The reference's WindowedAttention on (B, h*w, C) normed tokens: zero-pad the grid at the
    bottom/right to a multiple of ``ws``, attend within each window (padded tokens included as
    keys, or masked out), crop, project."""
    B, _, C = normed.shape
    h, w = hw
    H, W = -(-h // ws) * ws, -(-w // ws) * ws
    grid = torch.zeros(B, H, W, C)
    grid[:, :h, :w] = normed.reshape(B, h, w, C)
    valid = torch.zeros(H, W, dtype=torch.bool)
    valid[:h, :w] = True
    out = torch.zeros_like(grid)
    for b in range(B):
        for i in range(0, H, ws):
            for j in range(0, W, ws):
                win = grid[b, i:i + ws, j:j + ws].reshape(-1, C)
                keys = valid[i:i + ws, j:j + ws].reshape(-1) if mask_padding else None
                out[b, i:i + ws, j:j + ws] = _attend(win, attn, keys).reshape(ws, ws, C)
    out = out[:, :h, :w].reshape(B, h * w, C)
    return out @ attn.proj.weight.T + attn.proj.bias


def _block(window_pad_mask):
    from backbones.layers import Block
    block = Block(TINY_WIDTH, 4, 4.0, qkv_bias=False, qk_norm=True, norm_type='rms_norm',
                  layer_scale_init=0.1, window_size=4, window_pad_mask=window_pad_mask)
    _randomize(block)
    return block.eval()


def _reference_block(block, x, hw, mask_padding):
    y = _rms(x, block.norm1.weight)
    x = x + block.ls1.gamma * _reference_window_attention(y, hw, 4, block.attn, mask_padding)
    z = _rms(x, block.norm2.weight)
    mlp = F.gelu(z @ block.mlp.fc1.weight.T + block.mlp.fc1.bias) @ block.mlp.fc2.weight.T \
        + block.mlp.fc2.bias
    return x + block.ls2.gamma * mlp


@pytest.mark.parametrize('hw', [(7, 5), (8, 4)], ids=['7x5-padded', '8x4-exact'])
def test_unmasked_window_attention_equals_the_reference(hw):
    """window_pad_mask=False: the padded zero tokens are keys like any other."""
    x = torch.randn(2, hw[0] * hw[1], TINY_WIDTH, generator=torch.Generator().manual_seed(1))
    block = _block(window_pad_mask=False)
    with torch.no_grad():
        expected = _reference_block(block, x, hw, mask_padding=False)
        got = block(x, hw)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_masked_window_attention_unchanged_and_differs_from_unmasked():
    hw = (7, 5)
    x = torch.randn(2, 35, TINY_WIDTH, generator=torch.Generator().manual_seed(2))
    masked, unmasked = _block(window_pad_mask=True), _block(window_pad_mask=False)
    unmasked.load_state_dict(masked.state_dict())
    with torch.no_grad():
        expected = _reference_block(masked, x, hw, mask_padding=True)
        got = masked(x, hw)
        other = unmasked(x, hw)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # On a 7 x 5 grid with 4 x 4 windows every window holds padding: the modes must differ.
    assert (got - other).abs().max() > 1e-3


def test_masked_window_attention_with_cls_token_unchanged():
    """Our masked mode with a cls token: it joins every window and averages its outputs."""
    hw = (7, 5)
    block = _block(window_pad_mask=True)
    x = torch.randn(1, 1 + 35, TINY_WIDTH, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        y = _rms(x, block.norm1.weight)
        cls, grid = y[0, :1], y[0, 1:].reshape(7, 5, TINY_WIDTH)
        padded = torch.zeros(8, 8, TINY_WIDTH)
        padded[:7, :5] = grid
        valid = torch.zeros(8, 8, dtype=torch.bool)
        valid[:7, :5] = True
        out, cls_out = torch.zeros_like(padded), []
        for i in (0, 4):
            for j in (0, 4):
                seq = torch.cat([cls, padded[i:i + 4, j:j + 4].reshape(16, -1)])
                keys = torch.cat([torch.ones(1, dtype=torch.bool),
                                  valid[i:i + 4, j:j + 4].reshape(16)])
                o = _attend(seq, block.attn, keys)
                cls_out.append(o[:1])
                out[i:i + 4, j:j + 4] = o[1:].reshape(4, 4, -1)
        tokens = torch.cat([torch.stack(cls_out).mean(0), out[:7, :5].reshape(35, -1)])
        expected = tokens @ block.attn.proj.weight.T + block.attn.proj.bias
        got = block.window_attn(block.norm1(x), hw)[0]
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _tiny_backbone(path, **overrides):
    """The config's backbone at tiny width, held in float32 (the frozen recipe's bf16 weights
    are not what these tests are about)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    bb = tiny_model_cfg(Config.fromfile(path).model)['backbone']
    bb.update(arch=dict(TINY_6B), **overrides)
    bb.pop('frozen_dtype', None)
    return MODELS.build(bb), bb


def test_no_cls_token_pyramid_from_the_last_block():
    """Block 3's patch tokens (no cls token in the sequence) are the map every level is made
    from: 4x ConvT, channel LN (eps 1e-6), GELU, ConvT; 2x ConvT; 1x; 0.5x max-pool."""
    from backbones.pyramid import SimpleFeaturePyramid
    vit, _ = _tiny_backbone(FULL_TUNING)
    neck = SimpleFeaturePyramid(TINY_WIDTH, None, (4, 2, 1, 0.5), dict(type='LN', eps=1e-6))
    _randomize(vit, 4)
    _randomize(neck, 5)
    vit.eval()
    seen = {}
    vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault('first_in', a[0]))
    vit.blocks[3].register_forward_hook(lambda m, a, o: seen.setdefault('last_out', o))
    x = torch.randn(2, 3, 128, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        feats = vit(x)
        levels = neck(feats)
    h, w = 128 // 16, 96 // 16
    assert seen['first_in'].shape == (2, h * w, TINY_WIDTH)  # patch tokens only
    tokens = seen['last_out']
    assert tokens.shape == (2, h * w, TINY_WIDTH)
    m = tokens.transpose(1, 2).reshape(2, TINY_WIDTH, h, w)
    assert len(feats) == 1
    torch.testing.assert_close(feats[0], m)

    def ln(t, mod):
        mean = t.mean(1, keepdim=True)
        var = ((t - mean) ** 2).mean(1, keepdim=True)
        return (t - mean) / torch.sqrt(var + 1e-6) * mod.weight[:, None, None] + \
            mod.bias[:, None, None]

    s0, s1 = neck.stages[0], neck.stages[1]
    up4 = F.conv_transpose2d(m, s0[0].weight, s0[0].bias, stride=2)
    up4 = F.conv_transpose2d(F.gelu(ln(up4, s0[1])), s0[3].weight, s0[3].bias, stride=2)
    expected = [up4, F.conv_transpose2d(m, s1[0].weight, s1[0].bias, stride=2), m,
                F.max_pool2d(m, 2, 2)]
    assert len(levels) == 4
    for got, exp in zip(levels, expected):
        torch.testing.assert_close(got, exp, atol=1e-5, rtol=1e-5)
        assert got.is_contiguous()
    assert [128 / f.shape[-2] for f in levels] == [4, 8, 16, 32]
    assert [96 / f.shape[-1] for f in levels] == [4, 8, 16, 32]


def _bicubic_matrix(n_out, n_in, a=-0.75):
    """(n_out, n_in) matrix of 1-D bicubic resampling, align_corners=False, borders clamped
    (the convolution kernel of Keys with a = -0.75, as PyTorch and OpenCV use)."""
    def kernel(d):
        d = abs(d)
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        if d < 2:
            return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
        return 0.0

    M = torch.zeros(n_out, n_in, dtype=torch.float64)
    for i in range(n_out):
        src = (i + 0.5) * n_in / n_out - 0.5
        base = math.floor(src)
        for j in range(base - 1, base + 3):
            M[i, min(max(j, 0), n_in - 1)] += kernel(src - j)
    return M


def _resize2d(t, size):
    """Bicubic resize of the last two dims of ``t`` through the separable matrices above."""
    mh = _bicubic_matrix(size[0], t.shape[-2])
    mw = _bicubic_matrix(size[1], t.shape[-1])
    return (mh @ t.double() @ mw.T).float()


def _pretrained_file(tmp_path, grid=16, patch=14):
    """A tiny checkpoint in the original InternVL layout: a 14 px stem, pos_embed on a
    ``grid`` x ``grid`` grid (224 / 14 = 16) plus the cls slot, and a cls token."""
    from backbones.intern_vit import InternViT
    src = InternViT(arch=dict(TINY_6B), img_size=grid * patch, patch_size=patch)
    _randomize(src, 7)
    sd = src.state_dict()
    path = tmp_path / 'tiny_intern_vit_6b_224px.pth'
    torch.save(sd, path)
    return str(path), sd


@pytest.mark.parametrize('mode', ['bicubic', 'pinv'])
def test_14px_kernel_in_a_16px_stem(tmp_path, mode):
    path, sd = _pretrained_file(tmp_path)
    vit, _ = _tiny_backbone(HEAD_TUNING, patch_embed_resize=mode,
                            init_cfg=dict(type='Pretrained', checkpoint=path))
    vit.init_weights()
    w14 = sd['patch_embed.proj.weight']
    assert w14.shape[-2:] == (14, 14)
    got = vit.patch_embed.proj.weight.float()
    assert got.shape[-2:] == (16, 16)
    expected = _resize2d(w14, (16, 16))  # plain bicubic, no rescaling of the values
    if mode == 'bicubic':
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    else:  # the pseudo-inverse resize is another kernel
        assert (got - expected).abs().max() > 1e-2
    torch.testing.assert_close(vit.patch_embed.proj.bias.float(), sd['patch_embed.proj.bias'])


@pytest.mark.parametrize('path,grid', [(HEAD_TUNING, 16), (FULL_TUNING, 14)],
                         ids=['internvl-frozen', 'piip-baseline'])
def test_pos_embed_grid_rules(tmp_path, path, grid):
    """InternVL: the parameter is at 256 / 16 = 16 (the checkpoint's own grid: nothing is
    resampled on load); PIIP: at 224 / 16 = 14 (resampled once on load). At run time the grid
    is resampled bicubically to each input's token grid; the cls slot is kept but unused, and
    the checkpoint's cls token is dropped."""
    ckpt, sd = _pretrained_file(tmp_path)
    vit, bb = _tiny_backbone(path, init_cfg=dict(type='Pretrained', checkpoint=ckpt))
    assert bb['patch_size'] == 16 and bb['with_cls_token'] is False
    assert vit.pos_embed.shape == (1, 1 + grid * grid, TINY_WIDTH)
    vit.init_weights()  # strict: the unexpected cls_token must be dropped, nothing missing
    assert vit.cls_token is None and 'cls_token' not in vit.state_dict()
    src = sd['pos_embed']
    assert src.shape == (1, 1 + 16 * 16, TINY_WIDTH)
    pos = vit.pos_embed.detach().float()
    torch.testing.assert_close(pos[:, :1], src[:, :1])
    src_grid = src[0, 1:].reshape(16, 16, TINY_WIDTH).permute(2, 0, 1)
    expected = src_grid if grid == 16 else _resize2d(src_grid, (grid, grid))
    got_grid = pos[0, 1:].reshape(grid, grid, TINY_WIDTH).permute(2, 0, 1)
    torch.testing.assert_close(got_grid, expected, atol=1e-5, rtol=1e-5)

    # Run time: a 128 x 96 input is an 8 x 6 token grid.
    seen = {}
    vit.blocks[0].register_forward_pre_hook(lambda m, a: seen.setdefault('x', a[0]))
    x = torch.randn(1, 3, 128, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        vit(x)
    w = vit.patch_embed.proj
    patches = F.conv2d(x, w.weight, w.bias, stride=16).flatten(2)
    added = (seen['x'] - patches.transpose(1, 2))[0]  # (48, C)
    expected_run = _resize2d(got_grid, (8, 6)).reshape(TINY_WIDTH, 48).T
    torch.testing.assert_close(added, expected_run, atol=1e-5, rtol=1e-5)
