import numpy as np
import pytest
from PIL import Image

import segmentation  # noqa: F401
from mmseg.registry import TRANSFORMS


def _sample(tmp_path, img_hw=(20, 30), seg_hw=(20, 30), labels=(0, 1)):
    img_path, seg_path = tmp_path / 'a.jpg', tmp_path / 'a.png'
    Image.fromarray(np.zeros((*img_hw, 3), np.uint8)).save(img_path)
    seg = np.zeros(seg_hw, np.uint8)
    seg.flat[:len(labels)] = labels
    Image.fromarray(seg).save(seg_path)
    load_img = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    load_ann = TRANSFORMS.build(dict(type='LoadAnnotations', reduce_zero_label=True))
    res = load_img(dict(img_path=str(img_path), seg_map_path=str(seg_path),
                        reduce_zero_label=True, seg_fields=[]))
    return load_ann(res), img_path, seg_path


def test_valid_sample_passes(tmp_path):
    res, _, _ = _sample(tmp_path, labels=(0, 1, 3))  # 0 -> 255 (ignored), 1 -> 0, 3 -> 2
    check = TRANSFORMS.build(dict(type='ValidateSegSample', num_classes=3))
    assert check(res) is res


def test_label_out_of_range_names_file(tmp_path):
    res, _, seg_path = _sample(tmp_path, labels=(5, 1))
    check = TRANSFORMS.build(dict(type='ValidateSegSample', num_classes=3))
    with pytest.raises(ValueError, match=rf'{seg_path}: labels \[4\] are outside the class '
                                         rf'range 0\.\.2'):
        check(res)


def test_wrong_size_names_both_files_or_skips(tmp_path):
    res, img_path, seg_path = _sample(tmp_path, seg_hw=(10, 30))
    with pytest.raises(ValueError, match=rf'{seg_path}: label map is 10x30 but image '
                                         rf'{img_path} is 20x30'):
        TRANSFORMS.build(dict(type='ValidateSegSample', num_classes=3))(res)
    skip = TRANSFORMS.build(dict(type='ValidateSegSample', num_classes=3, on_error='skip'))
    assert skip(res) is None


def test_unreadable_image_names_file(tmp_path):
    bad = tmp_path / 'broken.jpg'
    bad.write_bytes(b'not an image')
    load = TRANSFORMS.build(dict(type='LoadImageFromFile'))
    with pytest.raises(AssertionError, match='failed to load image: .*broken.jpg'):
        load(dict(img_path=str(bad)))
    with pytest.raises(ValueError, match=f'{bad}: unreadable image'):
        TRANSFORMS.build(dict(type='CheckedLoadImageFromFile'))(dict(img_path=str(bad)))
    skip = TRANSFORMS.build(dict(type='CheckedLoadImageFromFile', on_error='skip'))
    assert skip(dict(img_path=str(bad))) is None
    good = tmp_path / 'good.png'
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(good)
    assert skip(dict(img_path=str(good)))['img'].shape == (4, 5, 3)
