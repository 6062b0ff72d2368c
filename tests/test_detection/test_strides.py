"""detection.check_detector_strides: configured anchor/RoI strides vs the neck's real strides."""
import pytest
from mmengine.config import Config

from detection import probe_size, strides_for_patch

from ._tiny import DEMO_ADAPTER_CONFIG, DEMO_CONFIG, fake_batch


def test_probe_size_divides_every_level():
    assert probe_size(14) == 448  # 32 tokens: levels of 128, 64, 32, 16, 8 cells
    assert probe_size(16) == 128
    assert probe_size(8) == 128


def test_strides_for_patch():
    assert strides_for_patch(14) == [3.5, 7.0, 14.0, 28.0, 56.0]
    assert strides_for_patch(16, extra_levels=0) == [4.0, 8.0, 16.0, 32.0]


@pytest.fixture
def demo_detector():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    return MODELS.build(Config.fromfile(DEMO_CONFIG).model)


def test_demo_strides_match(demo_detector):
    from detection import check_detector_strides, configured_strides
    assert check_detector_strides(demo_detector) == [4.0, 8.0, 16.0, 32.0, 64.0]
    assert configured_strides(demo_detector)['mask_roi_extractor'] == [4.0, 8.0, 16.0, 32.0]
    assert demo_detector.training  # the mode is restored


def test_adapter_demo_builds_with_standard_strides_and_trains_a_step():
    import torch
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from detection import check_detector_strides
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(DEMO_ADAPTER_CONFIG)
    assert cfg.model.backbone.type == 'InternViTAdapter'
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert check_detector_strides(model) == [4.0, 8.0, 16.0, 32.0, 64.0]
    inputs, samples = fake_batch(cfg.model.roi_head.bbox_head.num_classes)
    losses = model.loss(inputs, samples)
    total, _ = model.parse_losses(losses)
    assert torch.isfinite(total)


@pytest.fixture
def vitdet_detector():
    """A tiny patch-14 detector (our ViTDet-style variant: strides 3.5 ... 56)."""
    import os.path as osp

    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    from ._tiny import DET_CONFIG_DIR, tiny_model_cfg
    register_all_modules(init_default_scope=True)
    path = osp.join(DET_CONFIG_DIR, 'intern_vit_300m', 'head_tuning',
                    'mask-rcnn_intern-vit-300m-vitdet_8xb2-1x_coco-lsj-1024x1024.py')
    return MODELS.build(tiny_model_cfg(Config.fromfile(path).model))


def test_integer_strides_on_a_patch14_pyramid_are_caught(vitdet_detector):
    from mmdet.models.task_modules.prior_generators import AnchorGenerator

    from detection import check_detector_strides
    assert check_detector_strides(vitdet_detector) == [3.5, 7.0, 14.0, 28.0, 56.0]
    vitdet_detector.rpn_head.prior_generator = AnchorGenerator(
        strides=[4, 8, 16, 32, 64], ratios=[0.5, 1.0, 2.0], scales=[8])
    with pytest.raises(ValueError, match=r'rpn_anchors strides \[4.0, 8.0'):
        check_detector_strides(vitdet_detector)


def test_wrong_roi_strides_are_caught(demo_detector):
    from detection import check_detector_strides
    demo_detector.roi_head.bbox_roi_extractor.featmap_strides = [3.5, 7, 14, 28]
    with pytest.raises(ValueError, match='bbox_roi_extractor'):
        check_detector_strides(demo_detector)
