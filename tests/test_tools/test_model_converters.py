"""tools/model_converters/internvit2mmseg.py: conversion CLI over backbones.checkpoint."""
import importlib.util
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch

from backbones import InternViT
from backbones.checkpoint import load_pretrained
from tests.test_tools._toy import RunsSubprocess, save_evil_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
SCRIPT = osp.join(ROOT, 'tools', 'model_converters', 'internvit2mmseg.py')
TINY = dict(embed_dims=32, num_layers=2, num_heads=2, mlp_ratio=2.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)


def _converter():
    spec = importlib.util.spec_from_file_location('internvit2mmseg', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(*args):
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, timeout=120)


def _original_layout(tmp_path):
    """A random tiny InternViT saved as the original InternVL .pth (under 'module', with a
    classification head that the converter drops)."""
    torch.manual_seed(0)
    model = InternViT(arch=TINY, img_size=28)
    model.init_weights()
    sd = {k: torch.randn_like(v) for k, v in model.state_dict().items()}
    sd['head.weight'] = torch.randn(10, 32)
    path = tmp_path / 'internvl.pth'
    torch.save({'module': sd}, path)
    return path, sd


@pytest.mark.parametrize('suffix', ['.safetensors', '.pth'])
def test_round_trip(tmp_path, suffix, capsys):
    src, sd = _original_layout(tmp_path)
    dst = tmp_path / 'out' / f'converted{suffix}'
    if suffix == '.safetensors':  # the script itself, once
        res = _run(src, dst)
        assert res.returncode == 0, res.stderr
        stdout = res.stdout
    else:
        assert _converter().main([str(src), str(dst)]) == 0
        stdout = capsys.readouterr().out
    assert 'layout internvl' in stdout
    assert f'wrote {len(sd) - 1} tensors' in stdout
    assert 'head.weight' in stdout  # dropped keys are named
    if suffix == '.safetensors':
        from safetensors.torch import load_file
        out = load_file(str(dst))
    else:
        out = torch.load(dst, weights_only=True)
    assert set(out) == set(sd) - {'head.weight'}
    for k, v in out.items():
        torch.testing.assert_close(v, sd[k], rtol=0, atol=0)
    assert os.listdir(dst.parent) == [dst.name]  # no temporary file left behind
    model = InternViT(arch=TINY, img_size=28)
    assert load_pretrained(model, str(dst)) == ('internvl', [])
    torch.testing.assert_close(model.state_dict()['blocks.1.mlp.fc2.weight'],
                               sd['blocks.1.mlp.fc2.weight'])


def test_refuses_code_running_pickle(tmp_path):
    marker = tmp_path / 'MARKER'
    evil = save_evil_checkpoint(tmp_path / 'evil.pth', marker, RunsSubprocess)
    dst = tmp_path / 'out.safetensors'
    res = _run(evil, dst)
    assert res.returncode != 0
    assert 'Refused to load' in res.stderr and str(evil) in res.stderr
    assert not marker.exists() and not dst.exists()


def test_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        _converter().main([str(tmp_path / 'nope.pth'), str(tmp_path / 'out.pth')])
    assert exc.value.code == 2
    assert str(tmp_path / 'nope.pth') in capsys.readouterr().err


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
    converter = _converter()
    dst = tmp_path / 'out.pth'
    dst.write_bytes(b'previous')

    def broken_save(obj, f):
        with open(f, 'wb') as fh:
            fh.write(b'half')
        raise OSError('disk full')

    monkeypatch.setattr(converter.torch, 'save', broken_save)
    with pytest.raises(OSError, match='disk full'):
        converter.save_state_dict({'w': torch.zeros(2)}, str(dst))
    assert dst.read_bytes() == b'previous'
    assert os.listdir(tmp_path) == ['out.pth']


def test_shared_storage_to_safetensors(tmp_path):
    base = torch.arange(6.)
    sd = {'a': base[:3], 'b': base[3:], 'c': torch.ones(2, 3).t()}
    dst = tmp_path / 'shared.safetensors'
    _converter().save_state_dict(sd, str(dst))
    from safetensors.torch import load_file
    out = load_file(str(dst))
    for k in sd:
        torch.testing.assert_close(out[k], sd[k])
