"""engine.checkpoints.safe_load: MMEngine checkpoints that load with weights_only=True, and loading
that refuses pickles which would run code."""
import builtins
import io
import os
import pickle
import pickletools
import re
import zipfile

import pytest
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner import load_checkpoint
from mmengine.runner.checkpoint import CheckpointLoader

from tests.test_tools._toy import EVIL, ToyModel, save_evil_checkpoint, toy_runner
from backbones.checkpoint import CheckpointError, read_state_dict
from engine.checkpoints.safe_load import (load_from_http_weights_only, load_from_local_weights_only,
                                          make_checkpoint_weights_only_safe,
                                          patch_mmengine_checkpoint_loading,
                                          register_mmengine_safe_globals, resave_weights_only_safe,
                                          restore_history_buffers)


def _pickle_globals(path):
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith('data.pkl')))
    return {arg for op, arg, _ in pickletools.genops(data) if op.name == 'GLOBAL'}


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    """Two 4-iteration toy runs: one with SafeCheckpointStateHook, one as plain MMEngine."""
    root = tmp_path_factory.mktemp('runs')
    toy_runner(root / 'safe').train()
    toy_runner(root / 'plain', safe_hook=False).train()
    return root


def test_plain_mmengine_checkpoint_needs_getattr_and_numpy(trained):
    # What an unmodified MMEngine writes (this is what the fix is about).
    found = _pickle_globals(trained / 'plain' / 'iter_4.pth')
    assert 'mmengine.logging.history_buffer HistoryBuffer' in found
    assert '__builtin__ getattr' in found  # getattr(HistoryBuffer, 'min') etc.
    assert '_codecs encode' in found  # raw bytes of numpy arrays/scalars at protocol 2
    assert any(g.startswith('numpy') for g in found)


def test_safe_hook_checkpoint_needs_no_extra_global(trained):
    path = trained / 'safe' / 'iter_4.pth'
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(path)) == []
    found = _pickle_globals(path)
    assert not any(g.startswith(('numpy', '_codecs', '__builtin__', 'builtins', 'mmengine'))
                   for g in found), found
    ckpt = torch.load(path, weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert buf['type'] == 'mmengine.HistoryBuffer' and buf['log_history'].shape == (4,)
    assert isinstance(ckpt['message_hub']['runtime_info']['eta'], float)


def test_plain_checkpoint_loads_with_registered_globals(trained):
    registered = register_mmengine_safe_globals()
    # neither the real getattr nor _codecs.encode is allow-listed by us
    flat = [g[0] if isinstance(g, tuple) else g for g in registered]
    assert builtins.getattr not in flat
    assert not any(getattr(g, '__module__', '') == '_codecs' for g in flat)
    ckpt = torch.load(trained / 'plain' / 'iter_4.pth', weights_only=True)
    buf = ckpt['message_hub']['log_scalars']['train/loss']
    assert isinstance(buf, HistoryBuffer) and len(buf.data[0]) == 4
    assert buf.statistics('mean') == pytest.approx(buf.data[0].mean())


def test_resave_plain_checkpoint(trained, tmp_path):
    dst = tmp_path / 'safe.pth'
    resave_weights_only_safe(str(trained / 'plain' / 'iter_4.pth'), str(dst))
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(dst)) == []
    assert os.listdir(tmp_path) == ['safe.pth']
    ckpt = load_from_local_weights_only(str(dst))
    assert isinstance(ckpt['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def test_restricted_getattr_refuses_other_attributes(tmp_path):
    register_mmengine_safe_globals()

    class LooksUp:
        def __reduce__(self):
            return getattr, (HistoryBuffer, 'update')

    path = tmp_path / 'getattr.pth'
    torch.save({'x': LooksUp()}, path)
    with pytest.raises(pickle.UnpicklingError, match="getattr"):
        torch.load(path, weights_only=True)


def test_sanitise_round_trip():
    buf = HistoryBuffer([1.0, 2.5], [1, 2], max_length=7)
    ckpt = {'message_hub': {'log_scalars': {'loss': buf},
                            'runtime_info': {'eta': __import__('numpy').float64(3.0)}}}
    make_checkpoint_weights_only_safe(ckpt)
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    buffer.seek(0)
    loaded = restore_history_buffers(torch.load(buffer, weights_only=True))
    back = loaded['message_hub']['log_scalars']['loss']
    assert isinstance(back, HistoryBuffer) and back.max_length == 7
    assert back.data[0].tolist() == [1.0, 2.5] and back.data[1].tolist() == [1, 2]
    assert loaded['message_hub']['runtime_info']['eta'] == 3.0


def test_sanitise_leaves_live_state_alone():
    import numpy as np
    live = [np.float64(1.0), 2.0]  # e.g. a scheduler's base_values, referenced by the state
    meta = {'palette': np.zeros((2, 3), np.uint8)}
    ckpt = {'param_schedulers': [{'base_values': live}], 'meta': {'dataset_meta': meta}}
    make_checkpoint_weights_only_safe(ckpt)
    assert ckpt['param_schedulers'][0]['base_values'] == [1.0, 2.0]
    assert type(ckpt['param_schedulers'][0]['base_values'][0]) is float
    assert ckpt['meta']['dataset_meta']['palette'] == [[0, 0, 0], [0, 0, 0]]
    assert isinstance(live[0], np.float64) and isinstance(meta['palette'], np.ndarray)


def test_resume_with_weights_only(trained, monkeypatch, tmp_path):
    patch_mmengine_checkpoint_loading()
    # Every torch.load in the process is weights-only, whatever its call site says.
    monkeypatch.setenv('TORCH_FORCE_WEIGHTS_ONLY_LOAD', '1')
    work_dir = tmp_path / 'resume'
    work_dir.mkdir()
    for name in ('iter_4.pth', 'last_checkpoint'):
        src = (trained / 'safe' / name).read_bytes()
        if name == 'last_checkpoint':
            src = str(work_dir / 'iter_4.pth').encode()
        (work_dir / name).write_bytes(src)
    assert CheckpointLoader._get_checkpoint_loader(str(work_dir / 'iter_4.pth')) \
        is load_from_local_weights_only
    runner = toy_runner(work_dir, max_iters=6, resume=True)
    runner.train()
    assert runner.iter == 6
    loss = runner.message_hub.log_scalars['train/loss']
    assert len(loss.data[0]) == 6  # 4 resumed + 2 new
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(work_dir / 'iter_6.pth')) \
        == []


def test_resume_plain_mmengine_checkpoint(trained, tmp_path):
    patch_mmengine_checkpoint_loading()
    runner = toy_runner(tmp_path, max_iters=6, resume=True,
                        load_from=str(trained / 'plain' / 'iter_4.pth'))
    runner.train()
    assert runner.iter == 6
    assert len(runner.message_hub.log_scalars['train/loss'].data[0]) == 6


# --------------------------------------------------------------------------- malicious files
@pytest.fixture(params=EVIL, ids=lambda k: k.__name__)
def evil(request, tmp_path):
    marker = tmp_path / 'MARKER'
    path = save_evil_checkpoint(tmp_path / 'evil.pth', marker, request.param)
    yield path
    assert not marker.exists(), 'unpickling ran code'


def test_read_state_dict_refuses(evil):
    with pytest.raises(CheckpointError, match='Refused to load'):
        read_state_dict(evil)


def test_mmengine_load_checkpoint_refuses(evil):
    patch_mmengine_checkpoint_loading()
    with pytest.raises(CheckpointError, match=re.escape(f'Refused to load checkpoint {evil}')):
        load_checkpoint(ToyModel(), str(evil))


def test_runner_resume_refuses(evil, tmp_path):
    patch_mmengine_checkpoint_loading()
    runner = toy_runner(tmp_path / 'work', max_iters=6, resume=True, load_from=str(evil))
    with pytest.raises(CheckpointError, match='Refused to load checkpoint'):
        runner.train()


def test_runner_auto_resume_refuses(tmp_path):
    patch_mmengine_checkpoint_loading()
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    marker = tmp_path / 'MARKER'
    save_evil_checkpoint(work_dir / 'iter_2.pth', marker, EVIL[1])
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_2.pth'))
    with pytest.raises(CheckpointError, match='iter_2.pth'):
        toy_runner(work_dir, max_iters=6, resume=True).train()
    assert not marker.exists()


def test_raw_pickle_refused(tmp_path):
    # A legacy (non-zip) pickle goes through the same weights-only unpickler.
    marker = tmp_path / 'MARKER'
    path = tmp_path / 'raw.pth'
    with open(path, 'wb') as f:
        pickle.dump({'state_dict': {}, 'x': EVIL[0](marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match='Refused'):
        load_from_local_weights_only(str(path))
    assert not marker.exists()


def test_http_loader_refuses(evil, tmp_path):
    # file:// goes through the same download-then-load path as http(s)://
    with pytest.raises(CheckpointError, match='Refused to load checkpoint file://'):
        load_from_http_weights_only(evil.as_uri(), model_dir=str(tmp_path / 'hub'))
