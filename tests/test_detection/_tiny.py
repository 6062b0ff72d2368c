"""Shared helpers of the detection tests: config discovery and tiny-backbone overrides."""
from __future__ import annotations

import copy
import glob
import os
import os.path as osp
from typing import List

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
DET_CONFIG_DIR = osp.join(ROOT, 'configs', 'detection')
DEMO_DIR = osp.join(ROOT, 'configs', 'demo')
DEMO_CONFIG = osp.join(DEMO_DIR, 'mask-rcnn_intern-vit-tiny_1xb2-300_synthetic-coco-128x128.py')
DEMO_ADAPTER_CONFIG = osp.join(
    DEMO_DIR, 'mask-rcnn_intern-vit-tiny-adapter_1xb2-300_synthetic-coco-128x128.py')
TINY_WIDTH, TINY_DEPTH, TINY_HEADS = 64, 4, 4


def detection_configs() -> List[str]:
    """Every config under configs/detection except the ``_base_`` pieces."""
    paths = glob.glob(osp.join(DET_CONFIG_DIR, '**', '*.py'), recursive=True)
    return sorted(p for p in paths if '_base_' not in osp.relpath(p, DET_CONFIG_DIR).split(os.sep))


def config_id(path: str) -> str:
    return osp.relpath(path, DET_CONFIG_DIR)


def _end_index(i: int, depth: int) -> int:
    """Last block of the same fraction of a ``TINY_DEPTH`` model (11 of 48 -> 0 of 4)."""
    i = i + depth if i < 0 else i
    return (i + 1) * TINY_DEPTH // depth - 1


def _start_index(i: int, depth: int) -> int:
    return i * TINY_DEPTH // depth


def tiny_model_cfg(model_cfg):
    """A copy of a detector config whose backbone is 64 wide and 4 blocks deep.

    Only what the width and depth force changes: the arch (a dict with the preset's flavour),
    block indices scaled to the new depth, the neck's input channels; ``init_cfg`` is dropped.
    Everything else (patch size, window attention, freezing, frozen dtype, drop path, neck,
    heads, strides) is kept.
    """
    from backbones.intern_vit import PRESET_PRETRAIN_SIZE, resolve_arch

    model = copy.deepcopy(model_cfg)
    bb = model['backbone']
    preset = bb['arch']
    arch = resolve_arch(preset)
    depth = arch['num_layers']
    arch.update(embed_dims=TINY_WIDTH, num_layers=TINY_DEPTH, num_heads=TINY_HEADS)
    bb['arch'] = arch
    if isinstance(preset, str) and 'pretrain_size' not in bb:
        bb['pretrain_size'] = PRESET_PRETRAIN_SIZE[preset]
    bb.pop('init_cfg', None)
    for key in ('out_indices', 'global_indices'):
        if bb.get(key) is not None:
            bb[key] = [_end_index(i, depth) for i in bb[key]]
    if bb.get('interaction_indexes') is not None:
        bb['interaction_indexes'] = [[_start_index(a, depth), _end_index(b, depth)]
                                     for a, b in bb['interaction_indexes']]
    necks = model['neck'] if isinstance(model['neck'], list) else [model['neck']]
    first = necks[0]
    if isinstance(first['in_channels'], int):
        first['in_channels'] = TINY_WIDTH
    else:
        first['in_channels'] = [TINY_WIDTH] * len(first['in_channels'])
    # A pyramid without projection passes the ViT width on to the FPN after it.
    if len(necks) > 1 and first['type'] == 'SimpleFeaturePyramid' and \
            first.get('out_channels') is None:
        necks[1]['in_channels'] = [TINY_WIDTH] * len(necks[1]['in_channels'])
    return model


def fake_batch(num_classes: int, size: int = 128, batch: int = 1):
    """Random inputs and two ground-truth instances (boxes, labels, bitmap masks) per image."""
    from mmdet.structures import DetDataSample
    from mmdet.structures.mask import BitmapMasks
    from mmengine.structures import InstanceData

    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=g)
    samples = []
    boxes = [[10, 20, 60, 90], [70, 30, 120, 64]]
    for _ in range(batch):
        sample = DetDataSample(metainfo=dict(
            img_shape=(size, size), pad_shape=(size, size), ori_shape=(size, size),
            batch_input_shape=(size, size), scale_factor=(1.0, 1.0)))
        masks = np.zeros((len(boxes), size, size), np.uint8)
        for k, (x0, y0, x1, y1) in enumerate(boxes):
            masks[k, y0:y1, x0:x1] = 1
        inst = InstanceData()
        inst.bboxes = torch.tensor(boxes, dtype=torch.float32)
        inst.labels = torch.tensor([0, min(1, num_classes - 1)])
        inst.masks = BitmapMasks(masks, size, size)
        sample.gt_instances = inst
        samples.append(sample)
    return inputs, samples
