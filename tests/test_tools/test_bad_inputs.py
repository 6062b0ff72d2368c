"""Issue 17: bad inputs through the real CLIs. Nothing runs code, nothing is silently wrong,
nothing already written is overwritten: one test per numbered point of the issue (exit code,
the culprit named in the message, sha256 of what was already there unchanged)."""
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from ._toy import RunsShell, RunsSubprocess, ToyModel, save_evil_checkpoint

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
TRAIN = osp.join(ROOT, 'tools', 'train.py')
TEST = osp.join(ROOT, 'tools', 'test.py')
CONVERT = osp.join(ROOT, 'tools', 'model_converters', 'internvit2mmseg.py')
CONSOLIDATE = osp.join(ROOT, 'tools', 'model_converters', 'consolidate_checkpoint.py')
MAKE_ADE = osp.join(ROOT, 'tools', 'dataset_converters', 'make_synthetic_ade.py')
MAKE_COCO = osp.join(ROOT, 'tools', 'dataset_converters', 'make_synthetic_coco.py')
DEMO = osp.join(ROOT, 'configs', 'demo', 'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')


def _cli(*args, timeout=600):
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def _sha(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)) if osp.isdir(path) else [('', [], [str(path)])]:
        for name in sorted(files):
            with open(osp.join(root, name), 'rb') as f:
                h.update(name.encode() + f.read())
    return h.hexdigest()


def _internvl_weights(path, nan=False):
    from backbones import InternViT
    arch = dict(embed_dims=32, num_layers=1, num_heads=2, mlp_ratio=1.0, norm_type='rms_norm',
                qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
    sd = InternViT(arch=arch, img_size=28).state_dict()
    if nan:
        sd['blocks.0.mlp.fc1.weight'][0, 0] = float('nan')
    torch.save(sd, str(path))
    return path


# --------------------------------------------------------------------------- 1
def _deepspeed_folder(folder, payload=None):
    """A folder shaped as DeepSpeed writes one (ZeRO-2, one rank)."""
    folder.mkdir(parents=True)
    module = {'head.weight': torch.ones(2, 2)}
    model_states = {'module': module, 'buffer_names': [], 'shared_params': {},
                    'param_shapes': [{'head.weight': torch.Size([2, 2])}],
                    'ds_version': '0.19.8', 'meta': {'iter': 2}}
    if payload is not None:
        model_states['meta']['payload'] = payload
    torch.save(model_states, str(folder / 'mp_rank_00_model_states.pt'))
    torch.save({'optimizer_state_dict': {
        'zero_stage': 2, 'partition_count': 1,
        'single_partition_of_fp32_groups': [torch.full((4,), 3.0)]}},
        str(folder / 'bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt'))
    return folder


def test_1_deepspeed_folder_that_would_run_code_is_refused_by_name(tmp_path):
    pytest.importorskip('deepspeed')
    marker = tmp_path / 'MARKER'
    src = _deepspeed_folder(tmp_path / 'iter_2.pth', payload=RunsShell(marker))
    dst = tmp_path / 'out.pth'
    res = _cli(CONSOLIDATE, src, dst)
    assert res.returncode == 1, res.stderr[-3000:]
    assert str(src / 'mp_rank_00_model_states.pt') in res.stderr
    assert 'posix.system, a code-execution primitive' in res.stderr
    assert '--trust-pickle' in res.stderr
    assert not marker.exists() and not dst.exists()
    # the same folder without the payload consolidates, weights-only
    good = _deepspeed_folder(tmp_path / 'good' / 'iter_2.pth')
    res = _cli(CONSOLIDATE, good, dst)
    assert res.returncode == 0, res.stderr[-3000:]
    out = torch.load(dst, weights_only=True)
    assert torch.equal(out['state_dict']['head.weight'], torch.full((2, 2), 3.0))
    assert out['meta']['iter'] == 2


def test_1_deepspeed_resume_and_load_from_scan_the_folder_first(tmp_path):
    """DeepSpeed's own loader (resume / load_from of a folder) unpickles with
    weights_only=False: DeepSpeedZeroStrategy refuses such a folder by name before it."""
    pytest.importorskip('deepspeed')
    from backbones.checkpoint import CheckpointError
    from engine.strategies.deepspeed import DeepSpeedZeroStrategy
    marker = tmp_path / 'MARKER'
    src = _deepspeed_folder(tmp_path / 'iter_2.pth', payload=RunsShell(marker))
    strategy = object.__new__(DeepSpeedZeroStrategy)  # the scan comes before any engine state
    for call in (lambda: strategy.resume(str(src)), lambda: strategy.load_checkpoint(str(src))):
        with pytest.raises(CheckpointError, match='posix.system, a code-execution primitive'):
            call()
    assert not marker.exists()


# --------------------------------------------------------------------------- 3, 8, 10 (data)
@pytest.fixture(scope='module')
def demo_run(tmp_path_factory):
    """The demo config's synthetic dataset (4 val images) and an untrained checkpoint of its
    model."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    import backbones  # noqa: F401
    import segmentation  # noqa: F401
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    tmp = tmp_path_factory.mktemp('demo')
    data = tmp / 'data'
    make_dataset(str(data), num_train=2, num_val=2, size=64, num_classes=4, seed=0)
    cfg = Config.fromfile(DEMO)
    init_default_scope('mmseg')
    from mmseg.registry import MODELS
    model = MODELS.build(cfg.model)
    ckpt = tmp / 'model.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, str(ckpt))
    return SimpleNamespace(tmp=tmp, data=data, ckpt=ckpt, cfg=cfg)


def _test_cli(demo_run, ckpt, *extra):
    return _cli(TEST, DEMO, ckpt, '--work-dir', demo_run.tmp / 'work',
                '--cfg-options', f'test_dataloader.dataset.data_root={demo_run.data}',
                'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False',
                *extra)


def test_3_labels_reaching_num_classes_stop_evaluation_naming_the_file(demo_run, tmp_path):
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(demo_run.data, data)
    label = data / 'annotations' / 'validation' / 'synth_validation_00001.png'
    seg = np.asarray(Image.open(label)).copy()
    seg[:4, :4] = 9  # class 8 after reduce_zero_label; the dataset has 4
    Image.fromarray(seg).save(label)
    res = _cli(TEST, DEMO, demo_run.ckpt, '--work-dir', tmp_path / 'work',
               '--cfg-options', f'test_dataloader.dataset.data_root={data}',
               'test_dataloader.num_workers=0', 'test_dataloader.persistent_workers=False')
    assert res.returncode != 0
    assert f'{label}: labels [8] are outside the class range 0..3 of num_classes=4' \
        in res.stderr, res.stderr[-3000:]
    assert 'mIoU' not in res.stdout


def test_10_label_of_another_size_or_rgb_is_named_where_read(demo_run, tmp_path):
    from mmcv.transforms import Compose
    from mmengine.registry import init_default_scope
    init_default_scope('mmseg')
    img = demo_run.data / 'images' / 'training' / 'synth_training_00000.jpg'
    small, rgb = tmp_path / 'small.png', tmp_path / 'rgb.png'
    Image.fromarray(np.ones((32, 48), np.uint8)).save(small)
    Image.fromarray(np.ones((64, 64, 3), np.uint8)).save(rgb)
    for name in ('train_pipeline', 'test_pipeline'):
        pipeline = Compose(demo_run.cfg[name])
        for seg, msg in ((small, f'{small}: label map is 32x48 but image {img} is 64x64'),
                         (rgb, f'{rgb}: label map has 3 channels')):
            with pytest.raises(ValueError) as exc:
                pipeline(dict(img_path=str(img), seg_map_path=str(seg), reduce_zero_label=True,
                              seg_fields=[]))
            assert msg in str(exc.value), (name, str(exc.value))


def test_8_test_cli_says_what_is_wrong_with_the_checkpoint(demo_run, tmp_path):
    truncated = tmp_path / 'truncated.pth'
    data = demo_run.ckpt.read_bytes()
    truncated.write_bytes(data[:len(data) // 2])
    evil = save_evil_checkpoint(tmp_path / 'evil.pth', tmp_path / 'MARKER', RunsSubprocess)
    res = _test_cli(demo_run, truncated)
    assert res.returncode == 2
    assert f'{truncated} is truncated or corrupt' in res.stderr
    assert 'use --non-strict' not in res.stderr and 'does not match' not in res.stderr
    res = _test_cli(demo_run, evil)
    assert res.returncode == 2, res.stderr[-3000:]
    assert f'Refused to load checkpoint {evil}' in res.stderr
    assert 'subprocess.call, a code-execution primitive' in res.stderr
    assert 'use --non-strict' not in res.stderr and not (tmp_path / 'MARKER').exists()
    # a real mismatch keeps its advice, once; with --non-strict the advice is not repeated
    wrong = tmp_path / 'wrong.pth'
    torch.save({'state_dict': {'decode_head.conv_seg.weight': torch.zeros(9, 9, 1, 1)}},
               str(wrong))
    res = _test_cli(demo_run, wrong)
    assert res.returncode == 2 and res.stderr.count('use --non-strict') == 1, res.stderr[-2000:]


def test_13_test_cli_checkpoint_that_is_a_directory(tmp_path, capsys):
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmseg'\n")
    from .test_train_test_cli import _load
    with pytest.raises(SystemExit) as exc:
        _load(TEST).main([str(config), str(tmp_path)])
    assert exc.value.code == 2
    assert f'{tmp_path} is a directory, not a checkpoint file' in capsys.readouterr().err


# --------------------------------------------------------------------------- 4, 13 (converter)
def test_4_converter_never_destroys_its_source_or_an_existing_file(tmp_path):
    src = _internvl_weights(tmp_path / 'internvl.pth')
    before = _sha(src)
    res = _cli(CONVERT, src, src)
    assert res.returncode == 2 and f'DST {src} is SRC' in res.stderr
    link = tmp_path / 'link.pth'
    link.symlink_to(src)
    res = _cli(CONVERT, src, link, '--overwrite')
    assert res.returncode == 2 and 'is SRC' in res.stderr
    existing = tmp_path / 'existing.pth'
    existing.write_bytes(b'keep me')
    res = _cli(CONVERT, src, existing)
    assert res.returncode == 2 and f'DST {existing} exists; pass --overwrite' in res.stderr
    assert existing.read_bytes() == b'keep me' and _sha(src) == before
    res = _cli(CONVERT, src, existing, '--overwrite')
    assert res.returncode == 0, res.stderr[-2000:]
    assert 'blocks.0.attn.qkv.weight' in torch.load(existing, weights_only=True)
    assert _sha(src) == before


def test_13_converter_dst_directory_or_under_a_file_is_checked_first(tmp_path, monkeypatch):
    import importlib.util
    spec = importlib.util.spec_from_file_location('internvit2mmseg_cli', CONVERT)
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    read = []
    monkeypatch.setattr(cli, 'read_state_dict', lambda *a, **k: read.append(a))
    src = _internvl_weights(tmp_path / 'internvl.pth')
    a_file = tmp_path / 'a_file'
    a_file.write_text('x')
    for dst, msg in ((tmp_path, 'is a directory'), (a_file / 'sub' / 'out.pth', 'is a file')):
        with pytest.raises(SystemExit) as exc:
            cli.main([str(src), str(dst)])
        assert exc.value.code == 2
    assert not read and a_file.read_text() == 'x'


# --------------------------------------------------------------------------- 5
@pytest.mark.parametrize('tool', [MAKE_ADE, MAKE_COCO], ids=['ade', 'coco'])
def test_5_dataset_makers_refuse_to_write_into_an_existing_dataset(tool, tmp_path):
    out = tmp_path / 'ds'
    small = ('--num-train', '1', '--num-val', '1', '--size', '32')
    assert _cli(tool, out, *small).returncode == 0
    before = _sha(out)
    res = _cli(tool, out, *small, '--seed', '3')
    assert res.returncode == 1 and f'{out} is not empty' in res.stderr and '--overwrite' in \
        res.stderr
    assert _sha(out) == before
    if tool == MAKE_ADE:  # the same arguments again (README: "once, or make demo"): a no-op
        res = _cli(tool, out, *small)
        assert res.returncode == 0 and 'already holds this dataset' in res.stdout, res.stderr
        assert _sha(out) == before
    res = _cli(tool, out, '--num-train', '-1')
    assert res.returncode == 1 and 'must not be negative' in res.stderr and _sha(out) == before
    # --overwrite replaces what the tool wrote, and nothing else
    (out / 'notes.txt').write_text('mine')
    res = _cli(tool, out, *small, '--overwrite')
    assert res.returncode == 1 and 'notes.txt' in res.stderr and _sha(out) != before
    os.remove(out / 'notes.txt')
    assert _sha(out) == before
    res = _cli(tool, out, '--num-train', '2', '--num-val', '1', '--size', '32', '--overwrite')
    assert res.returncode == 0, res.stderr
    assert _sha(out) != before
    split = 'training' if tool == MAKE_ADE else ''
    images = out / 'images' / split if split else out / 'train'
    assert len(os.listdir(images)) == 2


# --------------------------------------------------------------------------- 7
def _hub_runner(tmp_path, model):
    from mmengine.logging import MessageHub
    hub = MessageHub.get_instance(f'bad-inputs-{tmp_path.name}')
    return SimpleNamespace(iter=0, work_dir=str(tmp_path), message_hub=hub, model=model)


def test_7_nan_guard_names_only_a_checkpoint_that_is_good(tmp_path):
    from engine.hooks import NonFiniteLossHook
    model = ToyModel()
    runner = _hub_runner(tmp_path, model)
    hook = NonFiniteLossHook()
    hook.before_train(runner)
    finite, nan = dict(loss=torch.tensor(1.0)), dict(loss=torch.tensor(float('nan')))
    hook.after_train_iter(runner, 0, outputs=finite)  # iteration 1
    runner.message_hub.update_info('last_ckpt', str(tmp_path / 'iter_1.pth'))  # saved at 1
    runner.iter = 1
    hook.after_train_iter(runner, 0, outputs=finite)  # the loss after iter_1 was finite
    runner.iter = 2  # iteration 3's update diverges; iter_3 is saved with NaN weights
    hook.after_train_iter(runner, 0, outputs=finite)
    with torch.no_grad():
        model.linear.weight.fill_(float('nan'))
    runner.message_hub.update_info('last_ckpt', str(tmp_path / 'iter_3.pth'))
    runner.iter = 3
    with pytest.raises(FloatingPointError) as exc:
        hook.after_train_iter(runner, 0, outputs=nan)
    msg = str(exc.value)
    assert 'at iteration 4' in msg and 'iter_3.pth was saved after the last finite loss' in msg
    assert f'Last good checkpoint (finite weights, and a finite loss after it): ' \
           f'{tmp_path / "iter_1.pth"}' in msg
    assert f'load_from={tmp_path / "iter_1.pth"}' in msg and 'not --resume' in msg
    # a checkpoint whose weights are NaN is not called good even if the loss looked finite
    hook = NonFiniteLossHook()
    hook.before_train(runner)
    hook.after_train_iter(runner, 0, outputs=finite)
    with pytest.raises(FloatingPointError, match='Last good checkpoint: none known'):
        hook.after_train_iter(runner, 0, outputs=nan)


def test_7_weights_holding_nan_are_refused_at_load(tmp_path):
    from backbones.checkpoint import CheckpointError, read_state_dict
    from engine.checkpoints.safe_load import load_from_local_weights_only
    path = _internvl_weights(tmp_path / 'nan.pth', nan=True)
    with pytest.raises(CheckpointError, match=rf'{path}: 1 tensors hold NaN or Inf '
                                              r'\(blocks\.0\.mlp\.fc1\.weight\)'):
        read_state_dict(str(path))
    with pytest.raises(CheckpointError, match=rf'{path}: 1 weight tensors hold NaN or Inf'):
        load_from_local_weights_only(str(path))


# --------------------------------------------------------------------------- 9
def test_9_unreadable_weight_files_are_named_with_what_they_are(tmp_path):
    from safetensors.torch import save_file

    from backbones.checkpoint import CheckpointError, read_state_dict
    empty = tmp_path / 'empty.pth'
    empty.write_bytes(b'')
    text = tmp_path / 'text.pth'
    text.write_text('hello, not weights')
    lfs = tmp_path / 'lfs.pth'
    lfs.write_text('version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 12\n')
    good = tmp_path / 'good.safetensors'
    save_file({'a': torch.ones(4)}, str(good))
    cut = tmp_path / 'cut.safetensors'
    cut.write_bytes(good.read_bytes()[:-4])
    index = tmp_path / 'model.safetensors.index.json'
    index.write_text('{"weight_map": ')
    evil = save_evil_checkpoint(tmp_path / 'evil.pth', tmp_path / 'MARKER', RunsShell)
    cases = [(empty, 'is empty (0 bytes)'), (text, 'is not a torch checkpoint, or is corrupt'),
             (lfs, 'is a Git LFS pointer'), (cut, 'is truncated or not a safetensors file'),
             (index, 'not a valid index json'),
             (evil, 'posix.system, a code-execution primitive')]
    for path, msg in cases:
        with pytest.raises(CheckpointError) as exc:
            read_state_dict(str(path))
        assert str(path) in str(exc.value) and msg in str(exc.value), str(exc.value)
    assert not (tmp_path / 'MARKER').exists()


def test_9_train_checks_init_cfg_and_resume_files_before_building(tmp_path):
    cut = tmp_path / 'cut.safetensors'
    from safetensors.torch import save_file
    save_file({'a': torch.ones(64)}, str(tmp_path / 'full.safetensors'))
    cut.write_bytes((tmp_path / 'full.safetensors').read_bytes()[:-16])
    weights = _internvl_weights(tmp_path / 'backbone.pth')
    data = tmp_path / 'data'
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    make_dataset(str(data), num_train=1, num_val=1, size=32, num_classes=4)
    common = ('--work-dir', tmp_path / 'work', '--cfg-options',
              f'train_dataloader.dataset.data_root={data}',
              f'val_dataloader.dataset.data_root={data}')
    res = _cli(TRAIN, DEMO, *common, f'model.backbone.init_cfg.checkpoint={cut}',
               'model.backbone.init_cfg.type=Pretrained')
    assert res.returncode == 2, res.stderr[-3000:]
    assert f'model.backbone.init_cfg.checkpoint: {cut} is truncated' in res.stderr
    res = _cli(TRAIN, DEMO, '--resume', weights, *common)
    assert res.returncode == 2, res.stderr[-3000:]
    assert f'--resume: {weights} is not a training checkpoint' in res.stderr
    # --cfg-options naming an int key with a word (point 13)
    res = _cli(TRAIN, DEMO, *common, 'train_cfg.max_iters=abc')
    assert res.returncode == 2
    assert "--cfg-options train_cfg.max_iters=abc: train_cfg.max_iters is int" in res.stderr


# --------------------------------------------------------------------------- 11
def test_11_resume_in_a_copied_work_dir_and_skipped_checkpoints(tmp_path, monkeypatch):
    from engine.checkpoints import resume
    from engine.checkpoints.resume import find_resumable_checkpoint
    warnings = []
    monkeypatch.setattr(resume, '_warn', warnings.append)

    class Log:
        def readouterr(self):
            out = SimpleNamespace(out='\n'.join(warnings))
            warnings.clear()
            return out
    capsys = Log()
    orig, copy = tmp_path / 'orig', tmp_path / 'copy'
    for d in (orig, copy):
        d.mkdir()
        for i in (2, 4):
            torch.save({'meta': {'iter': i}, 'state_dict': {}}, str(d / f'iter_{i}.pth'))
        (d / 'last_checkpoint').write_text(str(orig / 'iter_4.pth'))
    assert find_resumable_checkpoint(str(copy)) == str(copy / 'iter_4.pth')
    assert 'outside this work dir' in capsys.readouterr().out
    os.remove(copy / 'iter_4.pth')
    with pytest.raises(FileNotFoundError, match=rf'names {orig / "iter_4.pth"}, which is '
                                                r'outside the work dir'):
        find_resumable_checkpoint(str(copy))
    # a corrupt newest checkpoint, and last_checkpoint naming a missing file, are named
    (orig / 'iter_4.pth').write_bytes(b'PK\x03\x04 cut short')
    assert find_resumable_checkpoint(str(orig)) == str(orig / 'iter_2.pth')
    out = capsys.readouterr().out
    assert f'skipping {orig / "iter_4.pth"}' in out and 'incomplete or corrupt' in out
    (orig / 'last_checkpoint').write_text(str(orig / 'iter_9.pth'))
    assert find_resumable_checkpoint(str(orig)) == str(orig / 'iter_2.pth')
    assert 'iter_9.pth, which does not exist' in capsys.readouterr().out


def test_11_resume_of_another_model_names_the_keys(tmp_path):
    from backbones.checkpoint import CheckpointError
    from engine.hooks import ResumeCheckHook
    runner = SimpleNamespace(model=ToyModel(), _resume=True, _load_from='ckpt.pth')
    hook = ResumeCheckHook()
    ok = {'meta': {}, 'state_dict': ToyModel().state_dict()}
    hook.after_load_checkpoint(runner, ok)
    bad = {'meta': {}, 'state_dict': {'linear.weight': torch.zeros(3, 2),
                                      'linear.bias': torch.zeros(1)}}
    with pytest.raises(CheckpointError, match=r'cannot resume from ckpt\.pth.*shape mismatch '
                                              r'for linear\.weight: checkpoint \(3, 2\) vs '
                                              r'model \(1, 2\)'):
        hook.after_load_checkpoint(runner, bad)
    with pytest.raises(CheckpointError, match='is not a training checkpoint'):
        hook.after_load_checkpoint(runner, ToyModel().state_dict())
    runner._resume = False  # load_from: left to mmengine
    hook.after_load_checkpoint(runner, bad)


# --------------------------------------------------------------------------- 12
@pytest.mark.parametrize('umask', [0o022, 0o027])
def test_12_checkpoints_follow_the_umask(tmp_path, umask):
    from engine.checkpoints.atomic import _atomic_torch_save, atomic_write_bytes
    from engine.checkpoints.safe_load import resave_weights_only_safe
    old = os.umask(umask)
    try:
        atomic_write_bytes(b'x', tmp_path / 'a.bin')
        _atomic_torch_save({'w': torch.ones(1)}, str(tmp_path / 'b.pth'))
        resave_weights_only_safe(str(tmp_path / 'b.pth'), str(tmp_path / 'c.pth'))
        for name in ('a.bin', 'b.pth', 'c.pth'):
            assert os.stat(tmp_path / name).st_mode & 0o777 == 0o666 & ~umask, name
        os.chmod(tmp_path / 'a.bin', 0o600)  # replacing a file keeps its mode, as open() does
        atomic_write_bytes(b'y', tmp_path / 'a.bin')
        assert os.stat(tmp_path / 'a.bin').st_mode & 0o777 == 0o600
    finally:
        os.umask(old)
    assert sorted(os.listdir(tmp_path)) == ['a.bin', 'b.pth', 'c.pth']


# --------------------------------------------------------------------------- 13
def test_13_sharded_index_outside_its_folder_or_unlisted_keys(tmp_path):
    from safetensors.torch import save_file

    from backbones.checkpoint import CheckpointError, read_state_dict
    outside = tmp_path / 'outside.safetensors'
    save_file({'a': torch.ones(1)}, str(outside))
    folder = tmp_path / 'hf'
    folder.mkdir()
    index = folder / 'model.safetensors.index.json'
    for shard in ('../outside.safetensors', str(outside)):
        index.write_text(json.dumps({'weight_map': {'a': shard}}))
        with pytest.raises(CheckpointError, match='lies outside the folder of the index'):
            read_state_dict(str(folder))
    save_file({'a': torch.ones(1), 'b': torch.ones(1)}, str(folder / 'part.safetensors'))
    index.write_text(json.dumps({'weight_map': {'a': 'part.safetensors'}}))
    with pytest.raises(CheckpointError, match=r"shard part.safetensors does not hold what the "
                                              r"weight_map lists for it \(not listed: \['b'\]"):
        read_state_dict(str(folder))


def test_13_init_cfg_key_typo_fails_when_the_model_is_built():
    from backbones import InternViT
    with pytest.raises(ValueError, match=r"unknown keys \['checkpont'\] \('checkpont' -> "
                                         r"'checkpoint'\?\); 'checkpoint' is missing"):
        InternViT(arch='300m', init_cfg=dict(type='Pretrained', checkpont='weights.pth'))
