"""Few-shot training subsets: a deterministic, seeded fraction of a segmentation training list.

``subset_indices(n, ratio, seed)`` keeps ``max(1, round(n * ratio))`` of ``n`` samples: it sorts
nothing itself, draws ``numpy.random.RandomState(seed).permutation(n)`` (a stream NumPy keeps
stable across versions), keeps its first entries and returns them in ascending order. Because
every ratio takes a prefix of the same permutation, the subsets of one seed are nested:
1/16 is inside 1/8, inside 1/4, and so on. The datasets sort their list by image path first, so
the subset does not depend on the order in which the file system lists the files.

The reference (InternVL few-shot ADE20K) shuffles the sorted list with Python's ``random``,
seeded by each run's random seed (drawn at random unless ``--seed`` is passed, and not recorded),
and keeps the first ``20210 // N``: the same counts for ADE20K, but its subsets cannot be
reproduced. ``subset_seed=0`` is our default, not the reference's.
"""
from __future__ import annotations

from fractions import Fraction
from typing import List, Union

import numpy as np
from mmseg.datasets import ADE20KDataset, BaseSegDataset
from mmseg.registry import DATASETS

DEFAULT_SEED = 0


def parse_ratio(ratio: Union[float, int, str]) -> float:
    """A fraction in (0, 1] from a number or a string such as ``'1/16'``."""
    value = float(Fraction(ratio)) if isinstance(ratio, str) else float(ratio)
    if not 0 < value <= 1:
        raise ValueError(f'subset_ratio must be in (0, 1], got {ratio!r}')
    return value


def subset_indices(num: int, ratio: Union[float, str], seed: int = DEFAULT_SEED) -> List[int]:
    """Indices (ascending) of a seeded ``ratio`` subset of ``num`` samples; see module doc."""
    ratio = parse_ratio(ratio)
    if num == 0:
        return []
    keep = max(1, int(round(num * ratio)))
    perm = np.random.RandomState(seed).permutation(num)
    return sorted(int(i) for i in perm[:keep])


class FewShotSubsetMixin:
    """Keeps a seeded ``subset_ratio`` of whatever ``load_data_list`` of the dataset returns.

    Args:
        subset_ratio (float | str): Fraction of the list to keep, in (0, 1] (``1/16``,
            ``'1/16'``...). 1 keeps everything.
        subset_seed (int): Seed of the draw (0 in the reference configs).
    """

    def __init__(self, *args, subset_ratio: Union[float, str] = 1.0,
                 subset_seed: int = DEFAULT_SEED, **kwargs) -> None:
        self.subset_ratio = parse_ratio(subset_ratio)
        self.subset_seed = int(subset_seed)
        super().__init__(*args, **kwargs)

    def load_data_list(self) -> List[dict]:
        data_list = sorted(super().load_data_list(), key=lambda info: info['img_path'])
        if self.subset_ratio >= 1:
            return data_list
        keep = subset_indices(len(data_list), self.subset_ratio, self.subset_seed)
        return [data_list[i] for i in keep]


@DATASETS.register_module()
class FewShotADE20KDataset(FewShotSubsetMixin, ADE20KDataset):
    """:class:`ADE20KDataset` restricted to a seeded fraction of its list (few-shot recipes)."""


@DATASETS.register_module()
class FewShotSegDataset(FewShotSubsetMixin, BaseSegDataset):
    """:class:`BaseSegDataset` restricted to a seeded fraction of its list (any dataset layout,
    with ``metainfo`` giving the classes)."""
