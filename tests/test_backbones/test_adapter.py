"""InternViTAdapter: strides for any patch/input size, geometry of the deformable inputs,
frozen ViT with a trainable adapter, dtypes, checkpointing, weight loading, and a short
training run of the demo config."""
import copy
import importlib.util
import math
import os.path as osp

import pytest
import torch
import torch.nn.functional as F

from backbones import InternViT, InternViTAdapter
from backbones.adapter import (deform_inputs, get_reference_points, resize_to_grid)

TINY = dict(embed_dims=32, num_layers=4, num_heads=2, mlp_ratio=2.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
ADAPTER = dict(interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 3]], conv_inplane=8,
               deform_num_heads=2, deform_ratio=0.5, cffn_ratio=0.25, n_points=2)


def build(patch_size=16, **kwargs):
    torch.manual_seed(0)
    cfg = dict(arch=TINY, img_size=112, patch_size=patch_size, **ADAPTER)
    cfg.update(kwargs)
    model = InternViTAdapter(**cfg)
    model.init_weights()
    return model


def wake_deform_attn(model):
    """Deformable DETR's init zeroes the weights from the query to the offsets and attention
    weights, so nothing reaches the query norms at step 0: give them small weights, as after
    a few training steps."""
    from backbones.ms_deform_attn import MSDeformAttn
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, MSDeformAttn):
                m.sampling_offsets.weight.normal_(0, 0.02)
                m.attention_weights.weight.normal_(0, 0.02)
    return model


def expected_shapes(H, W):
    return [(math.ceil(H / s), math.ceil(W / s)) for s in (4, 8, 16, 32)]


@pytest.mark.parametrize('patch_size', [14, 16])
@pytest.mark.parametrize('hw', [(112, 112), (98, 154)])
def test_output_strides(patch_size, hw):
    model = build(patch_size)
    model.train()
    outs = model(torch.randn(2, 3, *hw))
    assert len(outs) == 4
    assert [tuple(o.shape[-2:]) for o in outs] == expected_shapes(*hw)
    assert all(o.shape[:2] == (2, 32) and o.dtype == torch.float32 for o in outs)
    assert all(torch.isfinite(o).all() for o in outs)


def test_registered_and_defaults():
    from mmengine.registry import MODELS
    model = MODELS.build(dict(type='InternViTAdapter', arch=TINY, img_size=64, patch_size=16,
                              conv_inplane=8, deform_ratio=0.5))
    assert isinstance(model, InternViT)
    assert model.interaction_indexes == ((0, 0), (1, 1), (2, 2), (3, 3))  # depth split in 4
    assert model.deform_num_heads == 2  # the ViT's heads
    assert len(model.interactions[3].extra_extractors) == 2
    assert model.interactions[2].extra_extractors is None


def test_argument_errors():
    with pytest.raises(ValueError, match='out_indices is not used'):
        InternViTAdapter(arch=TINY, img_size=64, out_indices=[3])
    with pytest.raises(ValueError, match='contiguous from block 0'):
        InternViTAdapter(arch=TINY, img_size=64, interaction_indexes=[[0, 1], [3, 3]])
    with pytest.raises(ValueError, match='contiguous from block 0'):
        InternViTAdapter(arch=TINY, img_size=64,
                         interaction_indexes=[[0, 0], [1, 1], [2, 2], [3, 4]])
    with pytest.raises(ValueError, match='not divisible by n_heads'):
        InternViTAdapter(arch=TINY, img_size=64, deform_num_heads=3)


def test_deform_inputs_match_vit_adapter_when_sizes_divide():
    """Input a multiple of 32 with patch 16: every level spans the image, and the reference
    points are ViT-Adapter's cell centres (i + 0.5) / n."""
    x = torch.zeros(1, 3, 64, 96)
    (ref1, shapes1, start1), (ref2, shapes2, start2) = deform_inputs(x, 16)
    assert shapes1.tolist() == [[8, 12], [4, 6], [2, 3]] and start1.tolist() == [0, 96, 120]
    assert shapes2.tolist() == [[4, 6]] and start2.tolist() == [0]
    assert ref1.shape == (1, 4 * 6, 3, 2) and ref2.shape == (1, 96 + 24 + 6, 1, 2)
    ys, xs = torch.meshgrid((torch.arange(4) + 0.5) / 4, (torch.arange(6) + 0.5) / 6,
                            indexing='ij')
    centres = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1)
    for lvl in range(3):
        torch.testing.assert_close(ref1[0, :, lvl], centres)
    ys, xs = torch.meshgrid((torch.arange(8) + 0.5) / 8, (torch.arange(12) + 0.5) / 12,
                            indexing='ij')
    torch.testing.assert_close(ref2[0, :96, 0], torch.stack([xs.reshape(-1), ys.reshape(-1)], -1))


def test_deform_inputs_patch14_uneven_size_in_pixels():
    """98x154 with patch 14: a 7x11 ViT grid (98x154 px) and SPM levels of 13x20, 7x10, 4x5
    cells that span 104x160, 112x160 and 128x160 px. Every reference point, mapped back through
    its level's extent, is the pixel centre of its query cell."""
    x = torch.zeros(2, 3, 98, 154)
    (ref1, shapes1, _), (ref2, shapes2, _) = deform_inputs(x, 14)
    assert shapes1.tolist() == [[13, 20], [7, 10], [4, 5]] and shapes2.tolist() == [[7, 11]]
    # ViT token (row 3, col 5) is centred at pixel (x=77, y=49)
    q = 3 * 11 + 5
    for lvl, (s, (h, w)) in enumerate(zip((8, 16, 32), shapes1.tolist())):
        torch.testing.assert_close(ref1[0, q, lvl] * torch.tensor([w * s, h * s]),
                                   torch.tensor([77.0, 49.0]))
    # the stride-32 cell (row 1, col 2), centred at (80, 48), in the 154x98 px ViT frame
    q = 13 * 20 + 7 * 10 + 1 * 5 + 2
    torch.testing.assert_close(ref2[0, q, 0] * torch.tensor([154.0, 98.0]),
                               torch.tensor([80.0, 48.0]))
    assert get_reference_points([(2, 2)], [8], [(1, 1)], [16]).shape == (1, 4, 1, 2)


def test_resize_to_grid_aligns_pixel_frames():
    x = torch.randn(1, 3, 4, 6)
    # stride 16 -> 4 and 32 with divisible sizes: plain scale-factor interpolation
    torch.testing.assert_close(resize_to_grid(x, 16, 4, (16, 24)),
                               F.interpolate(x, scale_factor=4, mode='bilinear',
                                             align_corners=False))
    torch.testing.assert_close(resize_to_grid(x, 16, 32, (2, 3)),
                               F.interpolate(x, scale_factor=0.5, mode='bilinear',
                                             align_corners=False))
    # 14 -> 32 with a 4-cell target where 4*14/32 = 1.75: replicate-padded, right size
    y = resize_to_grid(torch.randn(1, 3, 4, 4), 14, 32, (2, 2))
    assert y.shape[-2:] == (2, 2)


def test_frozen_vit_trainable_adapter_gradients():
    model = wake_deform_attn(build(16, frozen=True, init_values=0.1))
    model.train()
    adapter = [n for n, _ in model.named_parameters() if model.is_adapter_param(n)]
    vit = [n for n, _ in model.named_parameters() if not model.is_adapter_param(n)]
    assert adapter and vit
    params = dict(model.named_parameters())
    assert not any(params[n].requires_grad for n in vit)
    assert all(params[n].requires_grad for n in adapter)
    outs = model(torch.randn(2, 3, 64, 80))
    sum(o.square().mean() for o in outs).backward()
    assert all(params[n].grad is None for n in vit)
    no_grad = [n for n in adapter if params[n].grad is None or not params[n].grad.any()]
    assert not no_grad, no_grad
    # the injectors of every interaction learn through the frozen blocks after them
    assert model.interactions[0].injector.attn.value_proj.weight.grad.abs().sum() > 0


def test_unfrozen_every_parameter_gets_a_gradient():
    model = wake_deform_attn(build(14, init_values=0.1))
    model.train()
    outs = model(torch.randn(2, 3, 56, 70))
    sum(o.square().mean() for o in outs).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_frozen_vit_in_eval_mode_adapter_in_train_mode():
    model = build(16, frozen=True, drop_path_rate=0.1)
    model.train()
    assert all(not m.training for m in model.blocks.modules())
    assert not model.patch_embed.training
    for m in model.adapter_modules():
        assert all(sub.training for sub in m.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert model.norm1.training and model.spm.stem[1].training


def test_frozen_dtype_casts_the_vit_only():
    model = build(16, frozen=True, frozen_dtype='bfloat16')
    model.float()  # as a runner might: the ViT stays bf16, the adapter float32
    for name, p in model.named_parameters():
        expected = torch.float32 if model.is_adapter_param(name) else torch.bfloat16
        assert p.dtype == expected, name
    model.train()
    outs = model(torch.randn(2, 3, 64, 64))
    assert all(o.dtype == torch.float32 and torch.isfinite(o).all() for o in outs)
    sum(o.mean() for o in outs).backward()
    assert model.spm.fc1.weight.grad is not None


def test_bf16_forward_on_cpu():
    model = build(14)
    model.eval()
    x = torch.randn(1, 3, 70, 84)
    with torch.no_grad():
        ref = model(x)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            amp = model(x)
        model_bf16 = copy.deepcopy(model).to(torch.bfloat16)
        pure = model_bf16(x.bfloat16())
    for r, a, p in zip(ref, amp, pure):
        assert a.dtype == torch.float32 and p.dtype == torch.float32
        assert a.shape == r.shape == p.shape
        assert torch.isfinite(a).all() and torch.isfinite(p).all()
        # bf16 keeps ~3 significant digits; outputs are LayerNorm-normalised (unit scale)
        assert (a - r).abs().mean() < 0.1 and (p - r).abs().mean() < 0.1


def test_with_cp_leaves_outputs_and_gradients_unchanged():
    ref = build(16, frozen=True, init_values=0.1)
    cp = build(16, frozen=True, init_values=0.1, with_cp=True)
    cp.load_state_dict(ref.state_dict())
    x = torch.randn(2, 3, 64, 64)
    results = []
    for model in (ref, cp):
        model.eval()  # BN in eval: checkpoint recomputation must not change running stats
        outs = model(x)
        sum(o.square().mean() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()
                               if p.grad is not None}))
    for a, b in zip(results[0][0], results[1][0]):
        torch.testing.assert_close(a, b)
    assert results[0][1].keys() == results[1][1].keys()
    for n, g in results[0][1].items():
        torch.testing.assert_close(g, results[1][1][n], atol=1e-6, rtol=1e-5)


def test_pytorch_and_auto_impl_agree_on_cpu():
    a = build(16)
    b = build(16, deform_attn_impl='pytorch')
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for oa, ob in zip(a(x), b(x)):
            torch.testing.assert_close(oa, ob)


def test_loads_vit_weights_strictly_and_initialises_the_adapter(tmp_path):
    torch.manual_seed(1)
    vit = InternViT(arch=TINY, img_size=112, patch_size=14, pretrain_size=112)
    vit.init_weights()
    path = str(tmp_path / 'vit.pth')
    torch.save(vit.state_dict(), path)
    # patch-14 weights into a patch-16 adapter: patch embed and pos embed are resampled
    model = build(16, pretrain_size=112, init_cfg=dict(type='Pretrained', checkpoint=path))
    torch.testing.assert_close(model.blocks[2].mlp.fc1.weight, vit.blocks[2].mlp.fc1.weight)
    assert model.cls_token is None and 'cls_token' not in model.state_dict()  # dropped on load
    assert model.patch_embed.proj.weight.shape[-2:] == (16, 16)
    assert model.pos_embed.shape[1] == 1 + 7 * 7  # the 112 / 16 crop grid
    # the adapter is initialised (Deformable DETR offsets on rings), not loaded
    bias = model.interactions[0].injector.attn.sampling_offsets.bias.view(2, 3, 2, 2)
    torch.testing.assert_close(bias[:, :, 1], 2 * bias[:, :, 0])
    # unexpected keys still fail by name
    sd = vit.state_dict()
    sd['blocks.9.attn.qkv.weight'] = torch.zeros(1)
    torch.save(sd, path)
    from backbones.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match='blocks.9.attn.qkv.weight'):
        build(16, pretrain_size=112, init_cfg=dict(type='Pretrained', checkpoint=path))


# --------------------------------------------------------------------------- configs
ADAPTER_CONFIGS = {
    '6b': 'configs/segmentation/intern_vit_6b/vit_adapter/'
          'upernet_intern-vit-6b-adapter_8xb2-80k_ade20k-512x512.py',
    '300m': 'configs/segmentation/intern_vit_300m/vit_adapter/'
            'upernet_intern-vit-300m-adapter_8xb2-80k_ade20k-512x512.py',
    'demo': 'configs/demo/upernet_intern-vit-tiny-adapter_1xb4-100_synthetic-112x112.py',
}


def _config(key):
    from mmengine.config import Config
    return Config.fromfile(osp.join(REPO, ADAPTER_CONFIGS[key]))


@pytest.mark.parametrize('key', ['6b', '300m'])
def test_adapter_recipe(key):
    """DESIGN.md: 512 crops, patch 16, interactions at the quarters, cffn 0.25, deform 0.25,
    frozen ViT, UperNet; the common schedule (AdamW 4e-5, warmup 1500, poly, 80k, bf16)."""
    cfg = _config(key)
    b = cfg.model.backbone
    depth = {'6b': 48, '300m': 24}[key]
    q = depth // 4
    assert b.type == 'InternViTAdapter' and b.arch == key and b.patch_size == 16
    assert b.interaction_indexes == [[i * q, i * q + q - 1] for i in range(4)]
    assert b.cffn_ratio == 0.25 and b.deform_ratio == 0.25 and b.frozen is True
    assert b.init_cfg.type == 'Pretrained'
    width = {'6b': 3200, '300m': 1024}[key]
    assert int(width * b.deform_ratio) % b.deform_num_heads == 0
    assert cfg.model.get('neck') is None and cfg.model.decode_head.type == 'UPerHead'
    assert cfg.model.decode_head.in_channels == [width] * 4
    assert cfg.crop_size == (512, 512) and cfg.model.data_preprocessor.size == (512, 512)
    assert cfg.model.test_cfg.crop_size == (512, 512)
    crops = [t for t in cfg.train_dataloader.dataset.pipeline if t.type == 'RandomCrop']
    assert crops[0].crop_size == (512, 512)
    assert cfg.optim_wrapper.optimizer.lr == 4e-5 and cfg.optim_wrapper.dtype == 'bfloat16'
    assert cfg.train_cfg.max_iters == 80000 and cfg.train_dataloader.batch_size == 2
    warmup = [s for s in cfg.param_scheduler if s.type == 'LinearLR']
    assert warmup and warmup[0].start_factor == 1e-6


@pytest.mark.parametrize('key', ['6b', '300m'])
def test_adapter_recipe_has_the_reference_settings(key):
    """InternVL-MMDetSeg's upernet_intern_vit_adapter_6b_512_80k_ade20k_bs16_lr4e-5.py."""
    cfg = _config(key)
    b = cfg.model.backbone
    assert b.img_size == 512 and b.pretrain_size == {'6b': 224, '300m': 448}[key]
    assert b.with_cls_token is False and b.patch_embed_resize == 'bicubic'
    assert b.vit_feature_source == 'final' and b.add_vit_feature is True
    assert b.norm_cfg == dict(type='LN', eps=1e-6) and b.interaction_norm_eps == 1e-5
    assert b.n_points == 4 and b.conv_inplane == 64 and b.init_values == 0.0
    assert b.deform_num_heads == {'6b': 25, '300m': 16}[key]
    assert b.use_extra_extractor is True and b.with_cffn is True
    assert b.drop_path_rate == 0.0 and b.frozen is True and b.frozen_dtype == 'bfloat16'
    head, aux = cfg.model.decode_head, cfg.model.auxiliary_head
    assert head.channels == {'6b': 1536, '300m': 1024}[key] and head.pool_scales == (1, 2, 3, 6)
    assert aux.type == 'FCNHead' and aux.in_index == 2 and aux.loss_decode.loss_weight == 0.4
    assert cfg.model.test_cfg == dict(mode='slide', crop_size=(512, 512), stride=(341, 341))
    # test images: short side exactly 512, long side uncapped, no ResizeToMultiple
    test = [t.type for t in cfg.test_dataloader.dataset.pipeline]
    assert 'ResizeToMultiple' not in test
    resize = [t for t in cfg.test_dataloader.dataset.pipeline if t.type == 'Resize'][0]
    assert resize.scale[1] == 512 and resize.scale[0] >= 100000 and resize.keep_ratio
    ow = cfg.optim_wrapper
    assert ow.optimizer.type == 'AdamW' and ow.optimizer.weight_decay == 0.05
    assert ow.optimizer.betas == (0.9, 0.999) and ow.get('clip_grad') is None
    assert ow.constructor == 'InternViTLayerDecayOptimizerConstructor'
    assert ow.paramwise_cfg == dict(num_layers={'6b': 48, '300m': 24}[key],
                                    layer_decay_rate=0.95, no_decay_suffixes=['.bias'])
    # the lr formula and evaluation cadence of the segmentation schedule: mmcv's warmup factor
    # times a poly decay over the whole run, evaluation every 1000 keeping the best mIoU
    poly = [s for s in cfg.param_scheduler if s.type == 'PolyLR'][0]
    assert poly.begin == 0 and poly.end >= 80000 and poly.power == 1.0
    assert cfg.train_cfg.val_interval == 1000
    assert cfg.default_hooks.checkpoint.save_best == 'mIoU'


@pytest.mark.skipif(not importlib.util.find_spec('mmseg'), reason='needs mmseg')
@pytest.mark.parametrize('key', ['6b', '300m', 'demo'])
def test_adapter_config_trains_a_step_and_predicts(key):
    """Each config's model at the same depth but 32 wide: one CPU training step (the ViT
    frozen where the recipe says so, the adapter learning), then slide/whole inference."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope
    from mmengine.structures import PixelData
    from mmseg.registry import MODELS
    from mmseg.structures import SegDataSample

    from backbones.intern_vit import resolve_arch

    cfg = _config(key)
    init_default_scope('mmseg')
    model_cfg = copy.deepcopy(cfg.model)
    b = model_cfg.backbone
    b.arch = dict(resolve_arch(b.arch), embed_dims=32, num_heads=2, mlp_ratio=1.0)
    b.update(deform_num_heads=2, conv_inplane=8)
    b.pop('init_cfg', None)
    for head in ('decode_head', 'auxiliary_head'):
        if model_cfg.get(head):
            ic = model_cfg[head].in_channels
            model_cfg[head].in_channels = [32] * len(ic) if isinstance(ic, list) else 32
            model_cfg[head].channels = 16
    model_cfg.data_preprocessor.size = (64, 64)
    model = MODELS.build(model_cfg)
    model.init_weights()
    ow = copy.deepcopy(cfg.optim_wrapper)
    if ow.type == 'AmpOptimWrapper':  # bf16 autocast is GPU-only in MMEngine
        ow.type = 'OptimWrapper'
        ow.pop('dtype', None)
    optim_wrapper = build_optim_wrapper(model, ow)
    groups = optim_wrapper.optimizer.param_groups
    level_embed = model.backbone.level_embed  # 2-D: decays, as in the reference recipe
    assert any(g['weight_decay'] == ow.optimizer.weight_decay > 0
               and any(p is level_embed for p in g['params']) for g in groups)

    num_classes = model_cfg.decode_head.num_classes

    def batch(n):
        samples = []
        for _ in range(n):
            s = SegDataSample()
            s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, 64, 64)))
            s.set_metainfo(dict(img_shape=(64, 64), ori_shape=(64, 64)))
            samples.append(s)
        return dict(inputs=[torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8)
                            for _ in range(n)], data_samples=samples)

    before = {n: p.detach().clone() for n, p in model.backbone.named_parameters()}
    model.train()
    log_vars = model.train_step(batch(2), optim_wrapper)
    assert torch.isfinite(torch.as_tensor(log_vars['loss']))
    changed = {n for n, p in model.backbone.named_parameters()
               if not torch.equal(p.detach(), before[n])}
    assert 'spm.fc1.weight' in changed and 'interactions.3.extractor.ffn.fc1.weight' in changed
    if cfg.model.backbone.get('frozen'):
        assert not any(n for n in changed if not model.backbone.is_adapter_param(n))
    else:
        assert 'blocks.0.attn.qkv.weight' in changed
    model.eval()
    preds = model.test_step(batch(1))
    assert preds[0].pred_sem_seg.data.shape == (1, 64, 64)


# --------------------------------------------------------------------------- training
REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DEMO = osp.join(REPO, 'configs', 'demo',
                'upernet_intern-vit-tiny-adapter_1xb4-100_synthetic-112x112.py')


def _mmseg_ready():
    try:
        return importlib.util.find_spec('mmseg') is not None and \
            importlib.util.find_spec('mmcv._ext') is not None
    except (ImportError, ValueError):
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _mmseg_ready(), reason='needs mmseg and a compiled mmcv')
def test_demo_adapter_config_trains_and_tests(tmp_path):
    from mmengine.config import Config
    from mmengine.runner import Runner

    from tools.dataset_converters.make_synthetic_ade import make_dataset

    data_root = str(tmp_path / 'synthetic_ade')
    make_dataset(data_root, num_train=8, num_val=4, size=112, num_classes=4, seed=0)
    cfg = Config.fromfile(DEMO)
    cfg.work_dir = str(tmp_path / 'work')
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = data_root
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    cfg.train_cfg.max_iters = 4
    cfg.train_cfg.val_interval = 4
    cfg.default_hooks.checkpoint.interval = 4
    cfg.default_hooks.logger.interval = 1
    cfg.param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0,
                                end=4)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    assert osp.isfile(osp.join(cfg.work_dir, 'iter_4.pth'))
    metrics = runner.test()
    assert 'mIoU' in metrics and 0 <= metrics['mIoU'] <= 100


def test_window_attention_in_the_adapter_blocks():
    """window_size/global_indices reach the ViT blocks: a window covering the token grid is
    global attention (same outputs), a smaller one changes them and keeps the shapes."""
    x = torch.randn(1, 3, 98, 154)  # 7 x 11 tokens at patch 14
    plain = build(patch_size=14).eval()
    big = build(patch_size=14, window_size=11).eval()  # one (padded) window: global
    small = build(patch_size=14, window_size=4, global_indices=[-1]).eval()
    for m in (big, small):
        m.load_state_dict(plain.state_dict())
    assert [b.window_size for b in small.blocks] == [4] * (len(small.blocks) - 1) + [None]
    with torch.no_grad():
        ref, same, other = plain(x), big(x), small(x)
    for a, b, c in zip(ref, same, other):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
        assert c.shape == a.shape and torch.isfinite(c).all()
    assert not torch.allclose(other[-1], ref[-1], atol=1e-4)
