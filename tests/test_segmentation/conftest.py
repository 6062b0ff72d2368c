import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Run these tests on one intra-op thread.

    The models here are tiny: with two threads on a machine whose cores are busy (other test
    processes, a compile), OpenMP barriers make each small op 10-100x slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope='session')
def synthetic_ade(tmp_path_factory):
    """A tiny synthetic ADE20K-format dataset: 16 training and 4 validation 64x64 images."""
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    root = tmp_path_factory.mktemp('synthetic_ade')
    make_dataset(str(root), num_train=16, num_val=4, size=64, num_classes=5, seed=0)
    return root
