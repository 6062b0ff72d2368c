"""Multi-scale deformable attention: the PyTorch path against a brute-force reference, mmcv's
CUDA op against the PyTorch path, dtypes, impl selection and the module."""
import math

import pytest
import torch

from backbones.ms_deform_attn import (MSDeformAttn, choose_impl, level_start_index_from_shapes,
                                      mmcv_op_available, ms_deform_attn)

SHAPES = [(5, 7), (3, 4), (2, 2), (1, 3)]


def brute_force(value, shapes, locations, weights):
    """Explicit loops: for every batch, query, head, level and point, bilinear sampling at pixel
    coordinate (x * w - 0.5, y * h - 0.5) with zeros outside the map (mmcv's convention)."""
    B, _, heads, D = value.shape
    _, Lq, _, L, P, _ = locations.shape
    out = torch.zeros(B, Lq, heads, D, dtype=torch.float64)
    value = value.double()
    starts = [0]
    for h, w in shapes[:-1]:
        starts.append(starts[-1] + h * w)

    def pixel(b, lvl, head, yy, xx):
        h, w = shapes[lvl]
        if 0 <= yy < h and 0 <= xx < w:
            return value[b, starts[lvl] + yy * w + xx, head]
        return torch.zeros(D, dtype=torch.float64)

    for b in range(B):
        for q in range(Lq):
            for head in range(heads):
                for lvl, (h, w) in enumerate(shapes):
                    for p in range(P):
                        x = locations[b, q, head, lvl, p, 0].item() * w - 0.5
                        y = locations[b, q, head, lvl, p, 1].item() * h - 0.5
                        x0, y0 = math.floor(x), math.floor(y)
                        fx, fy = x - x0, y - y0
                        sample = (pixel(b, lvl, head, y0, x0) * (1 - fy) * (1 - fx)
                                  + pixel(b, lvl, head, y0, x0 + 1) * (1 - fy) * fx
                                  + pixel(b, lvl, head, y0 + 1, x0) * fy * (1 - fx)
                                  + pixel(b, lvl, head, y0 + 1, x0 + 1) * fy * fx)
                        out[b, q, head] += weights[b, q, head, lvl, p].item() * sample
    return out.flatten(2)


def random_inputs(B=2, Lq=6, heads=3, D=4, P=3, shapes=SHAPES, dtype=torch.float32,
                  device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    Lv = sum(h * w for h, w in shapes)
    L = len(shapes)
    value = torch.randn(B, Lv, heads, D, generator=g, dtype=torch.float64)
    # [-0.3, 1.3]: a good share of the points fall (partly or wholly) outside the maps
    locations = torch.rand(B, Lq, heads, L, P, 2, generator=g, dtype=torch.float64) * 1.6 - 0.3
    weights = torch.rand(B, Lq, heads, L, P, generator=g, dtype=torch.float64)
    weights = weights / weights.sum((-1, -2), keepdim=True)
    return (value.to(device, dtype), locations.to(device, dtype), weights.to(device, dtype))


def test_pytorch_matches_brute_force():
    value, loc, w = random_inputs()
    outside = ((loc < 0) | (loc > 1)).any(-1)
    assert outside.any() and (~outside).any()
    out = ms_deform_attn(value, SHAPES, None, loc, w, impl='pytorch')
    ref = brute_force(value, SHAPES, loc, w)
    assert out.shape == (2, 6, 3 * 4) and out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_pytorch_far_outside_is_zero():
    value, loc, w = random_inputs(Lq=2)
    loc = torch.full_like(loc, -2.0)
    out = ms_deform_attn(value, SHAPES, None, loc, w, impl='pytorch')
    assert torch.count_nonzero(out) == 0


def test_spatial_shapes_as_tensor_and_list_agree():
    value, loc, w = random_inputs()
    shapes_t = torch.tensor(SHAPES)
    a = ms_deform_attn(value, shapes_t, level_start_index_from_shapes(shapes_t), loc, w)
    b = ms_deform_attn(value, SHAPES, None, loc, w)
    torch.testing.assert_close(a, b)
    assert level_start_index_from_shapes(shapes_t).tolist() == [0, 35, 47, 51]


def test_pytorch_gradcheck():
    value, loc, w = random_inputs(B=1, Lq=2, heads=2, D=2, P=2, shapes=[(3, 4), (2, 2)],
                                  dtype=torch.float64)
    args = [t.clone().requires_grad_() for t in (value, loc, w)]
    torch.autograd.gradcheck(
        lambda v, l_, a: ms_deform_attn(v, [(3, 4), (2, 2)], None, l_, a, impl='pytorch'),
        args, atol=1e-6)


@pytest.mark.parametrize('dtype', [torch.bfloat16, torch.float16])
def test_pytorch_half_precision_on_cpu(dtype):
    value, loc, w = random_inputs()
    out = ms_deform_attn(value.to(dtype), SHAPES, None, loc, w.to(dtype), impl='pytorch')
    assert out.dtype == dtype
    ref = ms_deform_attn(value.to(dtype).float(), SHAPES, None, loc, w.to(dtype).float())
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)


def test_impl_selection_on_cpu():
    value, _, _ = random_inputs()
    assert choose_impl(value, 'auto') == 'pytorch'
    assert choose_impl(value.bfloat16(), 'auto') == 'pytorch'
    with pytest.raises(ValueError, match='impl must be one of'):
        choose_impl(value, 'cuda')
    # 'mmcv' is refused on CPU tensors (or when the op is missing) instead of falling back
    with pytest.raises((ValueError, RuntimeError), match='mmcv'):
        choose_impl(value, 'mmcv')


def test_shape_errors():
    value, loc, w = random_inputs()
    with pytest.raises(ValueError, match='positions but value has'):
        ms_deform_attn(value, [(5, 7), (3, 4)], None, loc, w)
    with pytest.raises(ValueError, match='expected value'):
        ms_deform_attn(value[0], SHAPES, None, loc, w)


def test_module_forward_backward_and_ratio():
    torch.manual_seed(0)
    attn = MSDeformAttn(d_model=32, n_levels=2, n_heads=4, n_points=3, ratio=0.25)
    assert attn.value_proj.out_features == 8 and attn.output_proj.in_features == 8
    shapes = torch.tensor([[6, 5], [3, 3]])
    feat = torch.randn(2, 39, 32, requires_grad=True)
    query = torch.randn(2, 7, 32, requires_grad=True)
    ref = torch.rand(1, 7, 2, 2)  # one point per level
    out = attn(query, ref, feat, shapes, level_start_index_from_shapes(shapes))
    assert out.shape == (2, 7, 32)
    out.sum().backward()
    assert feat.grad is not None and query.grad is not None
    assert all(p.grad is not None for p in attn.parameters())


def test_module_init_offsets_on_rings():
    attn = MSDeformAttn(d_model=16, n_levels=2, n_heads=4, n_points=2)
    bias = attn.sampling_offsets.bias.view(4, 2, 2, 2)
    assert torch.allclose(bias[:, :, 1], 2 * bias[:, :, 0])  # point k at radius k + 1
    assert torch.allclose(bias[0, 0, 0], torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match='not divisible by n_heads'):
        MSDeformAttn(d_model=32, n_heads=5, ratio=0.25)


def test_module_bf16_autocast_cpu():
    attn = MSDeformAttn(d_model=16, n_levels=1, n_heads=2, n_points=2)
    x = torch.randn(1, 12, 16)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(x, torch.rand(1, 12, 1, 2), x, [(3, 4)])
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


needs_mmcv_cuda = pytest.mark.skipif(
    not torch.cuda.is_available() or not mmcv_op_available(),
    reason="needs CUDA and mmcv's compiled multi-scale deformable attention")


@pytest.mark.gpu
@needs_mmcv_cuda
@pytest.mark.parametrize('dtype,tol', [(torch.float32, 1e-5), (torch.float16, 2e-2)])
def test_mmcv_matches_pytorch_on_cuda(dtype, tol):
    value, loc, w = random_inputs(B=3, Lq=50, heads=4, D=8, P=4, dtype=dtype, device='cuda')
    assert choose_impl(value, 'auto') == 'mmcv'
    shapes = torch.tensor(SHAPES, device='cuda')
    start = level_start_index_from_shapes(shapes)
    grads = {}
    outs = {}
    for impl in ('mmcv', 'pytorch'):
        args = [t.clone().requires_grad_() for t in (value, loc, w)]
        outs[impl] = ms_deform_attn(args[0], shapes, start, args[1], args[2], impl=impl)
        outs[impl].float().square().sum().backward()
        grads[impl] = [a.grad.float() for a in args]
    torch.testing.assert_close(outs['mmcv'].float(), outs['pytorch'].float(), atol=tol, rtol=tol)
    if dtype == torch.float32:
        for gm, gp in zip(grads['mmcv'], grads['pytorch']):
            torch.testing.assert_close(gm, gp, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_bf16_on_cuda_uses_pytorch():
    value, loc, w = random_inputs(dtype=torch.bfloat16, device='cuda')
    assert choose_impl(value, 'auto') == 'pytorch'
    out = ms_deform_attn(value, SHAPES, None, loc, w)
    ref = brute_force(value.float().cpu(), SHAPES, loc.float().cpu(), w.float().cpu())
    torch.testing.assert_close(out.float().cpu().double(), ref, atol=5e-2, rtol=5e-2)


def _mmcv_ops_importable():
    try:
        import mmcv.ops  # noqa: F401
    except (ImportError, OSError):
        return False
    return True


@pytest.mark.skipif(not _mmcv_ops_importable(), reason='needs mmcv with compiled ops')
def test_pytorch_matches_mmcv_pytorch_reference_on_cpu():
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    value, loc, w = random_inputs()
    ours = ms_deform_attn(value, SHAPES, None, loc, w, impl='pytorch')
    theirs = multi_scale_deformable_attn_pytorch(value, torch.tensor(SHAPES), loc, w)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
