"""tools/dataset_converters/make_synthetic_coco.py writes valid, deterministic COCO data."""
import json
import os.path as osp

import numpy as np
import pytest


def test_pycocotools_loads_it_with_valid_instances(synthetic_coco, coco_maker):
    from pycocotools.coco import COCO

    for split, n in (('train', 6), ('val', 4)):
        coco = COCO(str(synthetic_coco / 'annotations' / f'instances_{split}.json'))
        assert len(coco.getImgIds()) == n
        cats = coco.loadCats(coco.getCatIds())
        assert [c['name'] for c in cats] == list(coco_maker.CLASSES)
        assert len(cats) >= 3
        anns = coco.loadAnns(coco.getAnnIds())
        assert len(anns) >= n  # at least one object per image
        assert len({a['id'] for a in anns}) == len(anns)
        for ann in anns:
            img = coco.loadImgs(ann['image_id'])[0]
            assert osp.isfile(synthetic_coco / split / img['file_name'])
            H, W = img['height'], img['width']
            assert ann['iscrowd'] == 0 and ann['category_id'] in coco.getCatIds()
            (poly, ) = ann['segmentation']
            xy = np.asarray(poly).reshape(-1, 2)
            assert len(xy) >= 3
            assert (xy >= 0).all() and (xy[:, 0] <= W).all() and (xy[:, 1] <= H).all()
            x, y, w, h = ann['bbox']
            np.testing.assert_allclose([x, y, x + w, y + h],
                                       [*xy.min(0), *xy.max(0)], atol=0.01)
            # The area agrees with the rasterized polygon (pycocotools' own mask).
            mask = coco.annToMask(ann)
            assert mask.shape == (H, W)
            assert mask.sum() == pytest.approx(ann['area'], rel=0.12)


def test_objects_do_not_overlap_and_images_match_annotations(synthetic_coco):
    from pycocotools.coco import COCO
    coco = COCO(str(synthetic_coco / 'annotations' / 'instances_train.json'))
    for img_id in coco.getImgIds():
        masks = [coco.annToMask(a) for a in coco.loadAnns(coco.getAnnIds(imgIds=img_id))]
        assert (np.sum(masks, axis=0) <= 1).all()


def test_deterministic_per_seed_and_independent_of_count(tmp_path, coco_maker):
    a = coco_maker.make_dataset(str(tmp_path / 'a'), num_train=3, num_val=1, size=64, seed=1)
    b = coco_maker.make_dataset(str(tmp_path / 'b'), num_train=3, num_val=1, size=64, seed=1)
    c = coco_maker.make_dataset(str(tmp_path / 'c'), num_train=3, num_val=1, size=64, seed=2)
    d = coco_maker.make_dataset(str(tmp_path / 'd'), num_train=1, num_val=1, size=64, seed=1)
    assert a['train']['annotations'] == b['train']['annotations']
    assert a['train']['annotations'] != c['train']['annotations']
    first = [x for x in a['train']['annotations'] if x['image_id'] == 1]
    assert d['train']['annotations'] == first
    for name in ('synth_train_00000.jpg', 'synth_train_00002.jpg'):
        assert (tmp_path / 'a' / 'train' / name).read_bytes() == \
            (tmp_path / 'b' / 'train' / name).read_bytes()
    with open(tmp_path / 'a' / 'annotations' / 'instances_val.json') as f:
        assert json.load(f) == a['val']


def test_cli(tmp_path, coco_maker, capsys):
    coco_maker.main([str(tmp_path / 'out'), '--num-train', '2', '--num-val', '1', '--size', '64',
                     '--seed', '3'])
    assert '2 training images' in capsys.readouterr().out
    assert (tmp_path / 'out' / 'annotations' / 'instances_train.json').is_file()
    assert (tmp_path / 'out' / 'val' / 'synth_val_00000.jpg').is_file()
    with pytest.raises(ValueError, match='at least 32'):
        coco_maker.make_dataset(str(tmp_path / 'bad'), size=16)
