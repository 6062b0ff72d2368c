"""bf16 detection: mmcv 2.1.0's NMS and RoIAlign kernels have no bf16, and the 6B detection
recipes train under bf16 autocast (DeepSpeed even holds the heads in bf16). ``detection``
wraps both ops (detection/mixed_precision.py); without that the first iteration dies."""
import importlib
import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config

import detection  # noqa: F401  (installs the wrappers)

from ._tiny import DEMO_ADAPTER_CONFIG, DEMO_CONFIG, fake_batch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))


def test_wrappers_installed_once():
    from mmcv.ops import RoIAlign
    from detection import install_mixed_precision_fixes
    nms_module = importlib.import_module('mmcv.ops.nms')
    wrapped_nms, wrapped_forward = nms_module.nms, RoIAlign.forward
    assert install_mixed_precision_fixes()
    assert nms_module.nms is wrapped_nms and RoIAlign.forward is wrapped_forward


def test_nms_in_bf16_keeps_what_float32_keeps():
    from mmcv.ops import batched_nms
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(200, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + 5 + torch.rand(200, 2, generator=g) * 30], 1)
    boxes = boxes.bfloat16().float()  # values a bf16 tensor holds exactly
    scores = torch.rand(200, generator=g).bfloat16().float()
    idxs = torch.randint(0, 3, (200,), generator=g)
    cfg = dict(type='nms', iou_threshold=0.5)
    dets32, keep32 = batched_nms(boxes, scores, idxs, cfg)
    dets16, keep16 = batched_nms(boxes.bfloat16(), scores.bfloat16(), idxs, cfg)
    assert dets16.dtype == torch.bfloat16
    assert torch.equal(keep16, keep32) and torch.equal(dets16.float(), dets32)


def test_roi_align_in_bf16_matches_float32_and_passes_gradients():
    from mmcv.ops import RoIAlign
    layer = RoIAlign((7, 7), spatial_scale=0.25, sampling_ratio=0)
    feats = torch.randn(2, 8, 32, 32).bfloat16().requires_grad_()
    rois = torch.tensor([[0, 4.0, 8.0, 60.0, 90.0], [1, 10.0, 10.0, 100.0, 50.0]])
    out = layer(feats, rois)
    assert out.dtype == torch.bfloat16
    ref = layer(feats.detach().float(), rois)
    torch.testing.assert_close(out.float(), ref, atol=1e-2, rtol=1e-2)
    out.float().sum().backward()
    assert feats.grad is not None and feats.grad.dtype == torch.bfloat16
    assert feats.grad.abs().sum() > 0


def test_mask_rcnn_trains_and_predicts_under_bf16_autocast():
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(DEMO_CONFIG)
    model = MODELS.build(cfg.model)
    model.init_weights()
    inputs, samples = fake_batch(cfg.model.roi_head.bbox_head.num_classes)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        total, _ = model.parse_losses(model.loss(inputs, samples))
    assert torch.isfinite(total)
    total.backward()
    model.eval()
    with torch.autocast('cpu', dtype=torch.bfloat16), torch.no_grad():
        pred = model.predict(inputs, samples)[0].pred_instances
    assert len(pred.bboxes) > 0 and torch.isfinite(pred.bboxes.float()).all()


@pytest.mark.slow
@pytest.mark.parametrize('config, strategy', [
    (DEMO_ADAPTER_CONFIG, 'deepspeed_zero1'), (DEMO_CONFIG, 'deepspeed_zero3'),
    (DEMO_ADAPTER_CONFIG, 'fsdp2_full_shard')], ids=['adapter-zero1', 'vit-zero3', 'adapter-fsdp2'])
def test_demo_detector_trains_and_validates_with_a_sharded_engine(config, strategy,
                                                                  synthetic_coco, tmp_path):
    """DeepSpeed holds the whole detector in bf16, BatchNorm statistics included (its
    predictions are cast back to float32 for the COCO metric); FSDP2 keeps the heads in
    float32."""
    root = str(synthetic_coco).rstrip('/') + '/'
    options = [f'data_root={root}', f'train_dataloader.dataset.data_root={root}',
               f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}',
               f'val_evaluator.ann_file={root}annotations/instances_val.json',
               'train_cfg.max_iters=2', 'train_cfg.val_interval=2',
               'default_hooks.logger.interval=1']
    env = dict(os.environ, OMP_NUM_THREADS='1', DS_ACCELERATOR='cpu')
    res = subprocess.run([sys.executable, 'tools/train.py', config, '--work-dir',
                          str(tmp_path), '--strategy', strategy, '--cfg-options', *options],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-5000:]
    assert 'Iter(train) [2/2]' in log and 'coco/bbox_mAP' in log
