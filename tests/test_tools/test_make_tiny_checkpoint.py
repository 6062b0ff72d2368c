"""tools/model_converters/make_tiny_checkpoint.py: a tiny checkpoint in every layout, which the
loader (init_cfg) and the converter read."""
import os.path as osp
import subprocess
import sys

import pytest
import torch

from backbones import InternViT

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
MAKE = osp.join(ROOT, 'tools', 'model_converters', 'make_tiny_checkpoint.py')
CONVERT = osp.join(ROOT, 'tools', 'model_converters', 'internvit2mmseg.py')
ARCH = dict(embed_dims=64, num_layers=4, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


def _make(layout, out, *extra):
    from tools.model_converters.make_tiny_checkpoint import main
    assert main([layout, str(out), *extra]) == 0


def _load(path, **arch):
    model = InternViT(arch=dict(ARCH, **arch), img_size=56, patch_size=14,
                      init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()  # strict: any missing / unexpected key is an error
    return model.eval()


def test_backbone_layouts_load_through_init_cfg(tmp_path):
    for layout in ('internvl', 'hf_remote', 'hf_native'):
        _make(layout, tmp_path / layout)
    timm = pytest.importorskip('timm')  # noqa: F841
    _make('timm', tmp_path / 'timm')
    x = torch.randn(1, 3, 56, 56)
    with torch.no_grad():
        outs = {layout: _load(tmp_path / layout)(x)[0]
                for layout in ('internvl', 'hf_remote', 'hf_native')}
        timm_out = _load(tmp_path / 'timm', norm_type='layer_norm', qk_norm=False,
                         qkv_bias=True)(x)[0]
    # the same random weights in two layouts give the same model
    assert torch.equal(outs['internvl'], outs['hf_remote'])
    assert all(torch.isfinite(o).all() for o in (*outs.values(), timm_out))


@pytest.mark.parametrize('layout,expect', [
    ('released_segmentation', 'whole segmentation checkpoint (uper head, 4 classes, 4 ViT blocks)'),
    ('released_linear', 'whole segmentation checkpoint (linear head, 4 classes, 4 ViT blocks)'),
    ('released_detection', 'whole detection checkpoint (mask_rcnn head, 4 classes, 4 ViT blocks)')])
def test_released_layouts_convert_and_their_backbone_loads(layout, expect, tmp_path):
    _make(layout, tmp_path / 'released.pth')
    res = subprocess.run([sys.executable, CONVERT, str(tmp_path / 'released.pth'),
                          str(tmp_path / 'whole.pth')], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0 and expect in res.stdout, res.stdout + res.stderr[-2000:]
    res = subprocess.run([sys.executable, CONVERT, str(tmp_path / 'released.pth'),
                          str(tmp_path / 'vit.pth'), '--backbone-only'], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and 'dropped' in res.stdout, res.stdout + res.stderr[-2000:]
    if layout == 'released_detection':  # patch 16, no cls token
        model = InternViT(arch=ARCH, img_size=56, patch_size=16, with_cls_token=False,
                          init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth')))
        model.init_weights()
    else:
        _load(tmp_path / 'vit.pth')


def test_refuses_to_overwrite(tmp_path):
    out = tmp_path / 'x.pth'
    out.write_bytes(b'keep')
    res = subprocess.run([sys.executable, MAKE, 'internvl', str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and 'pass --overwrite' in res.stderr
    assert out.read_bytes() == b'keep'
