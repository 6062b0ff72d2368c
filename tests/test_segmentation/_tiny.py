"""Tiny stand-ins for the segmentation config tests: same depth, 32 wide, 56 px inputs."""
import copy

import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from backbones.intern_vit import resolve_arch

TINY_WIDTH = 32
IMG = 56


def tiny_model_cfg(cfg):
    """The config's model with a 32-wide backbone of the same depth and no pretrained weights.

    Keeping the depth keeps ``out_indices`` and the layer-decay ``num_layers`` meaningful.
    """
    model = copy.deepcopy(cfg.model)
    backbone = model.backbone
    arch = resolve_arch(backbone.arch)
    width = arch['embed_dims']
    backbone.arch = dict(arch, embed_dims=TINY_WIDTH, num_heads=2, mlp_ratio=1.0)
    backbone.pop('init_cfg', None)
    for key in ('neck', 'decode_head', 'auxiliary_head'):
        sub = model.get(key)
        if not sub:
            continue
        ic = sub.get('in_channels')
        if isinstance(ic, int):
            assert ic == width, f'{key}.in_channels {ic} != backbone width {width}'
            sub.in_channels = TINY_WIDTH
        elif ic is not None:
            assert list(ic) == [width] * len(ic), f'{key}.in_channels {ic} vs width {width}'
            sub.in_channels = [TINY_WIDTH] * len(ic)
        if key != 'neck' and sub.get('type') != 'InternViTLinearHead':
            sub.channels = 16
    model.data_preprocessor.size = (IMG, IMG)
    return model


def batch(num_classes, n=2):
    """A data batch as the dataloader gives it: uint8 images and random label maps."""
    samples = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, IMG, IMG)))
        s.set_metainfo(dict(img_shape=(IMG, IMG), ori_shape=(IMG, IMG)))
        samples.append(s)
    return dict(inputs=[torch.randint(0, 256, (3, IMG, IMG), dtype=torch.uint8)
                        for _ in range(n)], data_samples=samples)


def cpu_optim_wrapper_cfg(cfg):
    """The config's optim_wrapper, with bf16 autocast (GPU-only in MMEngine) left out."""
    ow = copy.deepcopy(cfg.optim_wrapper)
    if ow.get('type') == 'AmpOptimWrapper':
        ow.type = 'OptimWrapper'
        ow.pop('dtype', None)
        ow.pop('loss_scale', None)
    return ow
