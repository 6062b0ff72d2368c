import pytest


@pytest.fixture(scope='session')
def synthetic_ade(tmp_path_factory):
    """A tiny synthetic ADE20K-format dataset: 16 training and 4 validation 64x64 images."""
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    root = tmp_path_factory.mktemp('synthetic_ade')
    make_dataset(str(root), num_train=16, num_val=4, size=64, num_classes=5, seed=0)
    return root
