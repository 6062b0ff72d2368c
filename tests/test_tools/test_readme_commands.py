"""The README's commands, in the README's order, on a fresh clone at demo scale: `make demo`,
then the quick-start evaluation / TTA / inference block, the tiny-checkpoint block and the swap
block's dataset line, each taken verbatim from README.md and run with bash."""
import os
import os.path as osp
import re
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def bash_blocks(readme):
    return re.findall(r'```bash\n(.*?)```', readme, flags=re.S)


def block_with(blocks, needle):
    found = [b for b in blocks if needle in b]
    assert len(found) == 1, f'README.md has {len(found)} bash blocks with {needle!r}'
    return found[0]


def _run(script, cwd, env, timeout):
    res = subprocess.run(['bash', '-euo', 'pipefail', '-c', script], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f'{script}\n--- stdout\n{res.stdout[-3000:]}\n--- stderr\n' \
                                f'{res.stderr[-3000:]}'
    return res.stdout + res.stderr


@pytest.mark.slow
def test_readme_commands_in_order_on_a_fresh_clone(tmp_path):
    clone = tmp_path / 'clone'
    subprocess.run(['git', 'clone', '--quiet', ROOT, str(clone)], check=True, timeout=300)
    with open(clone / 'README.md') as f:
        blocks = bash_blocks(f.read())
    env = dict(os.environ, OMP_NUM_THREADS='1',
               # the installed environment (make setup's); `python` is its interpreter
               PATH=osp.dirname(sys.executable) + os.pathsep + os.environ.get('PATH', ''))
    venv = osp.dirname(osp.dirname(sys.executable))

    # make demo (the environment is set up: its stamp is there, nothing is installed)
    assert 'make demo' in block_with(blocks, 'make demo   #')
    out = _run(f'make demo VENV={venv}', clone, env, 1200)
    assert re.search(r'\[demo\] mIoU \d+\.\d+', out), out[-2000:]

    # evaluation, --show-dir / --out, --tta and inference on what make demo wrote
    out = _run(block_with(blocks, 'DEMO=configs/demo/'), clone, env, 1200)
    assert out.count('mIoU') >= 2
    assert len(os.listdir(clone / 'work_dirs' / 'demo' / 'show')) == 50
    assert os.listdir(clone / 'work_dirs' / 'infer')

    # tiny checkpoints in the released layouts and the converter
    tiny = block_with(blocks, 'make_tiny_checkpoint.py hf_remote').replace('/tmp/', f'{tmp_path}/')
    out = _run(tiny, clone, env, 600)
    assert 'whole segmentation checkpoint' in out
    # (the swap block's training is run by test_cli_usability.py's
    # test_tiny_swap_example_trains_on_the_synthetic_data; here only its dataset line, which
    # after make demo must be a no-op rather than an error)
    swap = block_with(blocks, 'upernet_intern-vit-tiny-swap')
    maker = next(line for line in swap.splitlines() if 'make_synthetic_ade.py' in line)
    assert 'already holds this dataset' in _run(maker, clone, env, 300)
