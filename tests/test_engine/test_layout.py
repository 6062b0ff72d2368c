"""backbones/ is model code only: it imports nothing of the training engine."""
import os
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_import_backbones_loads_no_engine_module():
    code = ('import sys, backbones\n'
            'bad = sorted(m for m in sys.modules if m == "engine" or m.startswith("engine."))\n'
            'print(",".join(bad))\n')
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == '', f'import backbones imported {out}'


def test_engine_registers_its_types():
    from mmengine.registry import HOOKS, MODEL_WRAPPERS, OPTIM_WRAPPER_CONSTRUCTORS, STRATEGIES

    import engine  # noqa: F401
    for registry, name in ((STRATEGIES, 'FSDP2Strategy'), (STRATEGIES, 'DeepSpeedZeroStrategy'),
                           (HOOKS, 'NonFiniteLossHook'), (HOOKS, 'SafeCheckpointStateHook'),
                           (HOOKS, 'ExportConsolidatedHook'),
                           (MODEL_WRAPPERS, 'CPUDistributedDataParallel'),
                           (OPTIM_WRAPPER_CONSTRUCTORS,
                            'InternViTLayerDecayOptimizerConstructor')):
        assert registry.get(name) is not None, name


def test_backbones_files_hold_no_engine_code():
    pattern = re.compile(r'strateg|hook|optimi[sz]er|constructor|fsdp|deepspeed|'
                         r'^\s*(?:from|import)\s+engine\b', re.IGNORECASE | re.MULTILINE)
    folder = osp.join(ROOT, 'backbones')
    for name in sorted(os.listdir(folder)):
        if name.endswith('.py'):
            with open(osp.join(folder, name)) as f:
                hits = [m.group(0).strip() for m in pattern.finditer(f.read())]
            assert not hits, f'backbones/{name} mentions {sorted(set(hits))}'
