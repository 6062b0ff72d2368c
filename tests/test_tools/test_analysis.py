"""FLOP counting against the analytic formula, and batched slide inference against mmseg's."""
import pytest
import torch

from backbones import InternViT
from backbones.intern_vit import resolve_arch
from tools.analysis.get_flops import analytic_backbone_macs, backbone_macs

TINY = dict(embed_dims=64, num_layers=2, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


@pytest.mark.parametrize('hw', [(56, 56), (70, 98)])
def test_fvcore_matches_analytic_tiny(hw):
    m = InternViT(arch=TINY, img_size=56, out_indices=(1,))
    counted = backbone_macs(m, *hw)
    ref = analytic_backbone_macs(TINY, *hw)
    # fvcore also counts norms / GELU / softmax elementwise work on top of the matmuls
    assert abs(counted - ref) / ref < 0.02, (counted, ref)


def test_6b_on_meta_matches_analytic():
    with torch.device('meta'):
        m = InternViT('6b', img_size=504, out_indices=(47,))
    counted = backbone_macs(m, 504, 504, meta=True)
    ref = analytic_backbone_macs(resolve_arch('6b'), 504, 504)
    assert abs(ref - 8.17e12) / 8.17e12 < 0.005  # 16.3 TFLOPs at 2 FLOPs per MAC
    assert abs(counted - ref) / ref < 0.02, (counted, ref)


def _tiny_segmentor(crop_batch_size):
    import segmentation  # noqa: F401  (registers BatchedSlideEncoderDecoder)
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS
    init_default_scope('mmseg')
    cfg = dict(
        type='BatchedSlideEncoderDecoder',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[0.0] * 3, std=[1.0] * 3),
        backbone=dict(type='InternViT', arch=TINY, img_size=56, out_indices=(1,)),
        decode_head=dict(type='FCNHead', in_channels=64, channels=16, num_convs=1,
                         num_classes=5, norm_cfg=dict(type='BN'), align_corners=False,
                         loss_decode=dict(type='CrossEntropyLoss')),
        test_cfg=dict(mode='slide', crop_size=(84, 84), stride=(56, 56),
                      crop_batch_size=crop_batch_size))
    from mmengine.config import ConfigDict
    model = MODELS.build(cfg).eval()
    model.test_cfg = ConfigDict(model.test_cfg)  # as when built from a config file
    return model


@pytest.mark.parametrize('crop_batch_size', [1, 3, 64])
def test_batched_slide_equals_mmseg_slide(crop_batch_size):
    from mmseg.models.segmentors import EncoderDecoder
    torch.manual_seed(0)
    model = _tiny_segmentor(crop_batch_size)
    x = torch.randn(2, 3, 211, 333)
    metas = [dict(img_shape=(211, 333), ori_shape=(211, 333), pad_shape=(211, 333))
             for _ in range(2)]
    with torch.no_grad():
        ours = model.slide_inference(x, [dict(m) for m in metas])
        ref = EncoderDecoder.slide_inference(model, x, [dict(m) for m in metas])
    assert ours.shape == ref.shape == (2, 5, 211, 333)
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-5)


def test_batched_slide_rejects_bad_batch():
    model = _tiny_segmentor(0)
    model.test_cfg['crop_batch_size'] = -1
    with pytest.raises(ValueError, match='crop_batch_size must be >= 1'):
        model.slide_inference(torch.randn(1, 3, 100, 100), [dict(img_shape=(100, 100))])


DEMO = 'configs/demo/upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py'


def _run_tool(repo_root, *args):
    import subprocess
    import sys
    res = subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    return res.stdout


def test_get_flops_cli_reports_backbone_and_heads(repo_root):
    out = _run_tool(repo_root, 'tools/analysis/get_flops.py', DEMO, '--shape', '98', '126')
    assert 'input 98x126' in out and 'neck + heads' in out
    assert 'counted/analytic = 1.0000' in out


def test_get_flops_cli_6b_meta(repo_root):
    cfg = 'configs/segmentation/intern_vit_6b/full_tuning/upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py'
    out = _run_tool(repo_root, 'tools/analysis/get_flops.py', cfg, '--meta')
    assert '16.338' in out and 'counted/analytic = 1.0000' in out


@pytest.mark.parametrize('train', [False, True])
def test_benchmark_cli_runs(repo_root, train):
    args = ['tools/analysis/benchmark.py', DEMO, '--shape', '112', '--batch', '2', '--repeat', '2',
            '--warmup', '1', '--device', 'cpu'] + (['--train'] if train else [])
    out = _run_tool(repo_root, *args)
    assert ('train step' if train else 'inference') + ' 112x112 batch 2 on cpu' in out
    assert 'img/s' in out
