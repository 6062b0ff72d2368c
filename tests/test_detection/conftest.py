import importlib.util
import os.path as osp

import pytest

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def load_tool(relpath: str, name: str):
    """Import a script under tools/ as a module."""
    spec = importlib.util.spec_from_file_location(name, osp.join(ROOT, relpath))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='session')
def coco_maker():
    return load_tool('tools/dataset_converters/make_synthetic_coco.py', 'make_synthetic_coco')


@pytest.fixture(scope='session')
def synthetic_coco(tmp_path_factory, coco_maker):
    """A small synthetic COCO dataset (6 train, 4 val images of 128x128)."""
    out = tmp_path_factory.mktemp('synthetic_coco')
    coco_maker.make_dataset(str(out), num_train=6, num_val=4, size=128, seed=0)
    return out
