import os
import os.path as osp

import pytest
import torch

from backbones import InternViT, count_parameters
from backbones.checkpoint import CheckpointError
from backbones.layers import flash_attn_available

from ._peers import (DEPTH, PRETRAIN, WIDTH, hf_native_hidden, hf_native_model, save_sharded,
                     timm_hidden, timm_model, tiny_arch, to_hf_remote)

OUT = (0, 1, 2)


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


def build(tmp=None, ckpt=None, **kw):
    kw.setdefault('arch', tiny_arch())
    kw.setdefault('pretrain_size', PRETRAIN)
    kw.setdefault('img_size', PRETRAIN)
    kw.setdefault('out_indices', OUT)
    m = InternViT(init_cfg=dict(type='Pretrained', checkpoint=ckpt) if ckpt else None, **kw)
    m.init_weights()
    return m.eval()


# ---------------------------------------------------------------- parity with real peers
@pytest.mark.parametrize('norm_type,qk_norm,qkv_bias', [('rms_norm', True, False),
                                                        ('layer_norm', False, True)])
def test_parity_transformers_internvl_vision(tmp_path, norm_type, qk_norm, qkv_bias):
    peer = hf_native_model(norm_type, qk_norm, qkv_bias)
    peer.save_pretrained(tmp_path)
    ours = build(ckpt=str(tmp_path), arch=tiny_arch(norm_type, qk_norm, qkv_bias))
    x = torch.randn(2, 3, 84, 112)  # not the 56 px pretraining size: pos-embed resampling
    ref = hf_native_hidden(peer, x, OUT)
    with torch.no_grad():
        outs = ours(x)
    assert len(outs) == len(OUT)
    for a, b in zip(outs, ref):
        assert a.shape == b.shape == (2, WIDTH, 6, 8)
        assert a.dtype == torch.float32
        assert rel_err(a, b) <= 1e-7  # faithful: ~5e-9; an RMSNorm eps of 1e-5 gives ~3e-7


def test_parity_timm_intern300m_style(tmp_path):
    peer = timm_model()
    path = osp.join(tmp_path, 'timm.pth')
    torch.save(peer.state_dict(), path)
    ours = build(ckpt=path, arch=tiny_arch('layer_norm', False, True), pos_embed_antialias=True)
    x = torch.randn(2, 3, 98, 84)
    ref = timm_hidden(peer, x, OUT)
    with torch.no_grad():
        outs = ours(x)
    for a, b in zip(outs, ref):
        assert a.shape == b.shape
        assert rel_err(a, b) <= 1e-7  # faithful: ~5e-9; an RMSNorm eps of 1e-5 gives ~3e-7


def test_four_layouts_identical(tmp_path):
    peer = hf_native_model()
    native_dir = osp.join(tmp_path, 'native')
    peer.save_pretrained(native_dir)
    ref_model = build(ckpt=native_dir)
    sd = {k: v.clone() for k, v in ref_model.state_dict().items()}

    pth = osp.join(tmp_path, 'intern_vit.pth')
    torch.save({'module': sd}, pth)
    remote = {'vision_model.' + k: v for k, v in to_hf_remote(sd).items()}
    remote['language_model.model.embed_tokens.weight'] = torch.randn(10, 8)
    remote['mlp1.0.weight'] = torch.randn(8)
    remote_file = osp.join(tmp_path, 'chat.safetensors')
    from safetensors.torch import save_file
    save_file(remote, remote_file)
    shard_dir = osp.join(tmp_path, 'sharded')
    os.makedirs(shard_dir)
    index = save_sharded(to_hf_remote(sd), shard_dir)
    timm_like = osp.join(tmp_path, 'timm.pth')
    torch.save(dict(sd, **{'head.weight': torch.randn(5, WIDTH), 'norm.weight': torch.ones(WIDTH)}),
               timm_like)

    x = torch.randn(1, 3, 70, 98)
    with torch.no_grad():
        expected = ref_model(x)
    for path in (pth, remote_file, index, shard_dir, timm_like):
        with torch.no_grad():
            outs = build(ckpt=path)(x)
        for a, b in zip(outs, expected):
            assert torch.equal(a, b), path


def test_wrong_width_names_first_mismatched_key(tmp_path):
    other = build(arch=dict(tiny_arch(), embed_dims=32))
    path = osp.join(tmp_path, 'narrow.pth')
    torch.save(other.state_dict(), path)
    with pytest.raises(CheckpointError, match=r'shape mismatch for (cls_token|pos_embed|patch_embed'
                                              r'\.proj\.weight): checkpoint \(.*32.*\) vs model'):
        build(ckpt=path)


def test_missing_keys_strict_and_relaxed(tmp_path):
    sd = build().state_dict()
    del sd['blocks.1.mlp.fc1.weight']
    sd['blocks.1.extra.weight'] = torch.zeros(3)
    path = osp.join(tmp_path, 'partial.pth')
    torch.save(sd, path)
    with pytest.raises(CheckpointError, match=r"missing keys \['blocks\.1\.mlp\.fc1\.weight'\].*"
                                              r"unexpected keys \['blocks\.1\.extra\.weight'\]"):
        build(ckpt=path)
    m = InternViT(arch=tiny_arch(), pretrain_size=PRETRAIN, img_size=PRETRAIN,
                  init_cfg=dict(type='Pretrained', checkpoint=path, strict=False))
    m.init_weights()
    assert torch.equal(m.blocks[0].attn.qkv.weight, sd['blocks.0.attn.qkv.weight'])


def test_malicious_pickle_refused_by_init_cfg(tmp_path):
    marker = tmp_path / 'pwned'

    class Evil:
        def __reduce__(self):
            return (os.system, (f'touch {marker}',))

    path = osp.join(tmp_path, 'evil.pth')
    torch.save({'state_dict': {'x': Evil()}}, path)
    with pytest.raises(CheckpointError, match='Refused to load .*evil.pth.*--trust-pickle'):
        build(ckpt=path)
    assert not marker.exists()


# ---------------------------------------------------------------- behaviour
def test_attention_implementations_agree():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 70, 98)
    naive = build(attn_impl='naive')
    sdpa = build(attn_impl='sdpa')
    sdpa.load_state_dict(naive.state_dict())
    with torch.no_grad():
        for a, b in zip(naive(x), sdpa(x)):
            assert rel_err(b, a) < 1e-6


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and flash_attn_available()),
                    reason='flash-attn needs CUDA and the flash_attn package')
def test_flash_attn_matches_sdpa_bf16():
    x = torch.randn(2, 3, 70, 98, device='cuda')
    sdpa = build(attn_impl='sdpa').cuda().to(torch.bfloat16)
    flash = build(attn_impl='flash_attn').cuda().to(torch.bfloat16)
    flash.load_state_dict(sdpa.state_dict())
    with torch.no_grad():
        for a, b in zip(flash(x), sdpa(x)):
            assert rel_err(a, b) < 2e-2


@pytest.mark.gpu
@pytest.mark.skipif(not (torch.cuda.is_available() and flash_attn_available()),
                    reason='flash-attn needs CUDA and the flash_attn package')
def test_auto_attention_runs_flash_attn_on_cuda_bf16(monkeypatch):
    """The default attn_impl='auto' calls flash-attn's kernel for CUDA bf16 inputs."""
    import flash_attn
    calls = []
    real = flash_attn.flash_attn_func
    monkeypatch.setattr(flash_attn, 'flash_attn_func',
                        lambda *a, **k: calls.append(a[0].dtype) or real(*a, **k))
    model = build().cuda().to(torch.bfloat16)
    assert model.blocks[0].attn.attn_impl == 'auto'
    with torch.no_grad():
        model(torch.randn(1, 3, 56, 56, device='cuda', dtype=torch.bfloat16))
    assert calls and set(calls) == {torch.bfloat16}


def test_attention_kernel_selection():
    from backbones.layers import resolve_attn_impl
    bf16, fp32 = torch.bfloat16, torch.float32

    def pick(req, cuda=True, dtype=bf16, masked=False, avail=True):
        return resolve_attn_impl(req, is_cuda=cuda, dtype=dtype, masked=masked,
                                 flash_available=avail)
    assert pick('auto') == 'flash_attn'
    assert pick('auto', avail=False) == 'sdpa'  # not installed
    assert pick('auto', cuda=False) == 'sdpa'
    assert pick('auto', dtype=fp32) == 'sdpa'  # flash kernels take half precision only
    assert pick('auto', dtype=torch.float16) == 'flash_attn'
    assert pick('auto', masked=True) == 'sdpa'  # padded windows need a mask
    assert pick('flash_attn') == 'flash_attn' and pick('flash_attn', cuda=False) == 'sdpa'
    assert pick('sdpa') == 'sdpa' and pick('naive') == 'naive'
    # the default is 'auto', and on this CPU it computes what sdpa computes
    auto, sdpa = build(), build(attn_impl='sdpa')
    assert auto.blocks[0].attn.attn_impl == 'auto'
    sdpa.load_state_dict(auto.state_dict())
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        for a, b in zip(auto(x), sdpa(x)):
            assert torch.equal(a, b)


def test_flash_attn_request_without_package_is_clear():
    if flash_attn_available():
        pytest.skip('flash_attn is installed here')
    with pytest.raises(ImportError, match="attn_impl='flash_attn'.*not installed"):
        build(attn_impl='flash_attn')


def test_with_cp_same_outputs_and_gradients():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 56, 56)
    plain = build(drop_path_rate=0.0).train()
    cp = build(with_cp=True).train()
    cp.load_state_dict(plain.state_dict())
    outs = []
    for m in (plain, cp):
        m.zero_grad()
        y = m(x)
        sum(o.square().mean() for o in y).backward()
        outs.append((y, {n: p.grad.clone() for n, p in m.named_parameters()}))
    (ya, ga), (yb, gb) = outs
    for a, b in zip(ya, yb):
        assert torch.allclose(a, b, atol=1e-6)
    for n in ga:
        assert torch.allclose(ga[n], gb[n], atol=1e-6, rtol=1e-5), n


@pytest.mark.parametrize('hw', [(56, 56), (70, 98), (61, 45)])
def test_every_trainable_parameter_gets_a_gradient_no_nans(hw):
    m = build(drop_path_rate=0.1).train()
    outs = m(torch.randn(2, 3, *hw))
    for o in outs:
        assert o.shape[-2:] == (-(-hw[0] // 14), -(-hw[1] // 14))
        assert torch.isfinite(o).all()
    sum(o.mean() for o in outs).backward()
    for n, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_frozen_has_no_gradients_and_frozen_dtype():
    m = build(frozen=True).train()
    assert not any(p.requires_grad for p in m.parameters())
    assert not m.training
    outs = m(torch.randn(1, 3, 56, 56))
    assert not any(o.requires_grad for o in outs)
    half = build(frozen=True, frozen_dtype='bfloat16')
    half.float()  # a runner casting the model must not undo the memory saver
    assert all(p.dtype == torch.bfloat16 for p in half.parameters())
    outs = half(torch.randn(1, 3, 56, 56))
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)


def test_out_indices_order_and_negative():
    x = torch.randn(1, 3, 56, 56)
    m = build(out_indices=(-1, 0))
    full = build(out_indices=(0, DEPTH - 1))
    full.load_state_dict(m.state_dict())
    assert m.out_indices == (DEPTH - 1, 0)
    with torch.no_grad():
        last, first = m(x)
        first_ref, last_ref = full(x)
    assert torch.equal(last, last_ref) and torch.equal(first, first_ref)
    assert not torch.equal(last, first)


@pytest.mark.parametrize('kwargs,match', [
    (dict(out_indices=(DEPTH,)), r'out_indices entry 3 is outside the depth of 3'),
    (dict(arch=dict(tiny_arch(), num_heads=5)), r'embed_dims=64 is not divisible by num_heads=5'),
    (dict(arch=dict(tiny_arch(), width=3)), r"unknown keys \['width'\]"),
    (dict(arch='7b'), r"Unknown InternViT arch '7b'"),
    (dict(img_size=10), r'smaller than patch_size 14'),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_input_smaller_than_patch_is_refused():
    with pytest.raises(ValueError, match='input of 10x40 pixels is smaller than the 14px patch'):
        build()(torch.randn(1, 3, 10, 40))


def test_presets_on_meta_device():
    assert 5.85e9 < count_parameters('6b') < 5.95e9
    assert count_parameters('6b-448px') < count_parameters('6b')
    with torch.device('meta'):
        m = InternViT('6b-448px')
    assert len(m.blocks) == 45 and m.pretrain_size == 448
    assert 0.29e9 < count_parameters('300m') < 0.31e9


def test_registered_in_mmseg_and_mmdet():
    import backbones  # noqa: F401
    from mmdet.registry import MODELS as DET
    from mmseg.registry import MODELS as SEG
    for registry in (SEG, DET):
        m = registry.build(dict(type='InternViT', arch=tiny_arch(), img_size=56, out_indices=(1,)))
        assert isinstance(m, InternViT)


# ---------------------------------------------------------------- window attention (detection)
def test_window_covering_the_grid_is_global_attention():
    x = torch.randn(2, 3, 56, 84)  # 4x6 tokens
    glob = build()
    win = build(window_size=6)
    win.load_state_dict(glob.state_dict())
    with torch.no_grad():
        for a, b in zip(win(x), glob(x)):
            assert torch.equal(a, b) or rel_err(a, b) < 1e-6


@pytest.mark.parametrize('impl', ['sdpa', 'naive'])
def test_small_windows_with_padding(impl):
    m = build(window_size=4, global_indices=(-1,), attn_impl=impl).train()
    assert [b.window_size for b in m.blocks] == [4, 4, None]
    outs = m(torch.randn(1, 3, 154, 98))  # 11x7 tokens: padded to 12x8 windows
    for o in outs:
        assert o.shape == (1, WIDTH, 11, 7)
        assert torch.isfinite(o).all()
    sum(o.mean() for o in outs).backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_windows_agree_across_attention_impls():
    x = torch.randn(1, 3, 154, 98)
    a = build(window_size=4, attn_impl='naive')
    b = build(window_size=4, attn_impl='sdpa')
    b.load_state_dict(a.state_dict())
    with torch.no_grad():
        for p, q in zip(a(x), b(x)):
            assert rel_err(q, p) < 1e-5
