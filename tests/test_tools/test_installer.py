"""The installer's wheel-cache path: with a cached mmcv wheel, setup reinstalls without compiling."""
import glob
import os
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cache_key():
    import torch
    ops = 'cuda' if (torch.cuda.is_available() and torch.version.cuda) else 'cpu'
    return (f"py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace('+', '_')}"
            f"-cuda{torch.version.cuda or 'cpu'}-ops_{ops}-cxx11abi{int(torch._C._GLIBCXX_USE_CXX11_ABI)}")


@pytest.mark.slow
def test_cached_setup_reinstalls_mmcv_without_compiling():
    house = os.environ.get('MMCV_WHEELHOUSE', os.path.join(
        os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')),
        'internvit-dense', 'mmcv-wheels'))
    wheels = glob.glob(os.path.join(house, 'mmcv-2.1.0', _cache_key(), 'mmcv-2.1.0-*.whl'))
    assert wheels, (f'no cached mmcv wheel under {house} for {_cache_key()}: `make setup` '
                    f'should have put one there')
    venv = os.path.dirname(os.path.dirname(sys.executable))
    env = dict(os.environ, VENV=venv, MMCV_REINSTALL='1')
    start = time.time()
    proc = subprocess.run(['make', '-s', 'setup'], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    elapsed = time.time() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert 'using cached mmcv wheel' in out, out[-3000:]
    assert 'building mmcv' not in out and 'compiling with' not in out
    assert elapsed < 120, f'cached setup took {elapsed:.0f} s'
    check = subprocess.run([sys.executable, '-c', 'import mmcv._ext; from mmcv.ops import nms, '
                            'MultiScaleDeformableAttention'], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
