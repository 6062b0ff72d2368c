"""Few-shot subsets: deterministic, seeded, nested, the right size; the dataset classes."""
import pytest

from segmentation.few_shot import (FewShotADE20KDataset, FewShotSegDataset, parse_ratio,
                                   subset_indices)

# ADE20K train has 20210 images; the reference fractions are 1/16 .. 1/1.
ADE_TRAIN = 20210


@pytest.mark.parametrize('denominator', [16, 8, 4, 2, 1])
def test_subset_size(denominator):
    idx = subset_indices(ADE_TRAIN, 1 / denominator, seed=0)
    assert len(idx) == round(ADE_TRAIN / denominator)
    assert idx == sorted(set(idx)) and 0 <= idx[0] and idx[-1] < ADE_TRAIN


def test_subset_is_deterministic_and_seeded():
    assert subset_indices(1000, 1 / 16, seed=0) == subset_indices(1000, 1 / 16, seed=0)
    assert subset_indices(1000, 1 / 16, seed=0) != subset_indices(1000, 1 / 16, seed=1)


def test_subsets_of_one_seed_are_nested():
    subsets = [set(subset_indices(ADE_TRAIN, 1 / d, seed=0)) for d in (16, 8, 4, 2, 1)]
    for small, big in zip(subsets, subsets[1:]):
        assert small < big
    assert subsets[-1] == set(range(ADE_TRAIN))


def test_documented_seed_0_draw_is_stable():
    """Pins the draw of the reference seed so that a NumPy or code change cannot move it."""
    assert subset_indices(32, 1 / 8, seed=0) == [2, 10, 11, 22]


def test_ratio_parsing():
    assert parse_ratio('1/16') == pytest.approx(0.0625)
    assert parse_ratio(0.5) == 0.5
    for bad in (0, 1.5, '-1/2'):
        with pytest.raises(ValueError, match=r'in \(0, 1\]'):
            parse_ratio(bad)
    assert subset_indices(3, 1 / 16) == [subset_indices(3, 1 / 16)[0]]  # at least one sample
    assert subset_indices(0, 0.5) == []


def _dataset_kwargs(root, **kw):
    return dict(data_root=str(root), pipeline=[], img_suffix='.jpg', seg_map_suffix='.png',
                data_prefix=dict(img_path='images/training',
                                 seg_map_path='annotations/training'), **kw)


def test_few_shot_ade20k_dataset(synthetic_ade):
    full = FewShotADE20KDataset(**_dataset_kwargs(synthetic_ade))
    assert len(full) == 16
    quarter = FewShotADE20KDataset(**_dataset_kwargs(synthetic_ade, subset_ratio=1 / 4))
    again = FewShotADE20KDataset(**_dataset_kwargs(synthetic_ade, subset_ratio='1/4'))
    other = FewShotADE20KDataset(**_dataset_kwargs(synthetic_ade, subset_ratio=1 / 4,
                                                   subset_seed=5))
    paths = [quarter.get_data_info(i)['img_path'] for i in range(len(quarter))]
    assert len(quarter) == 4
    assert paths == [again.get_data_info(i)['img_path'] for i in range(len(again))]
    assert paths != [other.get_data_info(i)['img_path'] for i in range(len(other))]
    all_paths = sorted(full.get_data_info(i)['img_path'] for i in range(len(full)))
    assert paths == [all_paths[i] for i in subset_indices(16, 1 / 4, 0)]
    assert quarter.get_data_info(0)['reduce_zero_label'] is True
    assert quarter.metainfo['classes'][0] == 'wall'  # ADE20K's names


def test_few_shot_seg_dataset_with_own_classes(synthetic_ade):
    ds = FewShotSegDataset(**_dataset_kwargs(
        synthetic_ade, subset_ratio=0.5, reduce_zero_label=True,
        metainfo=dict(classes=('a', 'b', 'c', 'd', 'e'))))
    assert len(ds) == 8 and ds.metainfo['classes'] == ('a', 'b', 'c', 'd', 'e')


def test_registered_in_mmseg():
    from mmseg.registry import DATASETS
    assert DATASETS.get('FewShotADE20KDataset') is FewShotADE20KDataset
    assert DATASETS.get('FewShotSegDataset') is FewShotSegDataset
