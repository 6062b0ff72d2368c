"""tools/dataset_converters/make_synthetic_ade.py: layout, labels, determinism, CLI."""
import hashlib
import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tools.dataset_converters.make_synthetic_ade import (TEXTURES, class_names, make_dataset,
                                                         make_sample)


def _digest(folder):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(folder)):
        for f in sorted(files):
            with open(osp.join(root, f), 'rb') as fh:
                h.update(f.encode() + fh.read())
    return h.hexdigest()


def test_layout_and_labels(tmp_path):
    meta = make_dataset(str(tmp_path), num_train=3, num_val=2, size=64, num_classes=5, seed=1)
    assert meta['classes'] == class_names(5)
    for split, n in (('training', 3), ('validation', 2)):
        imgs = sorted(os.listdir(tmp_path / 'images' / split))
        anns = sorted(os.listdir(tmp_path / 'annotations' / split))
        assert len(imgs) == len(anns) == n
        assert [i[:-4] for i in imgs] == [a[:-4] for a in anns]
        assert all(i.endswith('.jpg') for i in imgs) and all(a.endswith('.png') for a in anns)
        img = Image.open(tmp_path / 'images' / split / imgs[0])
        ann = np.asarray(Image.open(tmp_path / 'annotations' / split / anns[0]))
        assert img.mode == 'RGB' and img.size == (64, 64)
        assert ann.dtype == np.uint8 and ann.shape == (64, 64)
        assert set(np.unique(ann)) <= set(range(6))  # 0 = unlabeled, 1..5 classes
    assert json.loads((tmp_path / 'classes.json').read_text())['classes'] == class_names(5)


def test_deterministic_per_seed(tmp_path):
    make_dataset(str(tmp_path / 'a'), 4, 2, 48, 5, seed=3)
    make_dataset(str(tmp_path / 'b'), 4, 2, 48, 5, seed=3)
    make_dataset(str(tmp_path / 'c'), 4, 2, 48, 5, seed=4)
    assert _digest(tmp_path / 'a') == _digest(tmp_path / 'b')
    assert _digest(tmp_path / 'a') != _digest(tmp_path / 'c')


def test_image_i_does_not_depend_on_dataset_size(tmp_path):
    make_dataset(str(tmp_path / 'small'), 2, 1, 48, 5, seed=0)
    make_dataset(str(tmp_path / 'big'), 5, 1, 48, 5, seed=0)
    name = 'annotations/training/synth_training_00001.png'
    assert (tmp_path / 'small' / name).read_bytes() == (tmp_path / 'big' / name).read_bytes()


def test_color_does_not_tell_the_class(tmp_path):
    """Object colors are drawn per instance: the mean color of a class says nothing."""
    make_dataset(str(tmp_path), num_train=40, num_val=0, size=64, num_classes=4, seed=0)
    means = {c: [] for c in (2, 3, 4)}
    for name in sorted(os.listdir(tmp_path / 'images' / 'training')):
        img = np.asarray(Image.open(tmp_path / 'images' / 'training' / name), np.float32)
        ann = np.asarray(Image.open(tmp_path / 'annotations' / 'training' / (name[:-4] + '.png')))
        for c in means:
            if (ann == c).sum() > 50:
                means[c].append(img[ann == c].mean(0))
    centers = np.stack([np.mean(v, 0) for v in means.values()])
    spread = np.mean([np.std(v, 0).mean() for v in means.values()])
    # The classes' average colors are much closer to each other than instances are spread.
    assert np.abs(centers - centers.mean(0)).max() < spread


def test_default_classes():
    assert class_names(4) == ['background', 'stripes', 'checker', 'dots']
    assert class_names(len(TEXTURES) + 1)[1:] == list(TEXTURES)


def test_sample_has_background_objects_and_ignored_borders():
    rng = np.random.default_rng([0, 0, 0])
    img, label = make_sample(rng, 96, 5)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    values = set(np.unique(label))
    assert 1 in values and 0 in values and values & {2, 3, 4, 5}


def test_num_classes_bounds():
    with pytest.raises(ValueError, match='--num-classes'):
        class_names(1)
    with pytest.raises(ValueError, match='--num-classes'):
        class_names(len(TEXTURES) + 2)


def test_cli(tmp_path, repo_root):
    out = tmp_path / 'ds'
    subprocess.run([sys.executable, 'tools/dataset_converters/make_synthetic_ade.py', str(out),
                    '--num-train', '2', '--num-val', '1', '--size', '40', '--num-classes', '3',
                    '--seed', '7'], cwd=repo_root, check=True, capture_output=True)
    assert len(os.listdir(out / 'images' / 'training')) == 2
    assert len(os.listdir(out / 'annotations' / 'validation')) == 1
    label = np.asarray(Image.open(next((out / 'annotations' / 'training').iterdir())))
    assert label.max() <= 3
