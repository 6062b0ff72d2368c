#!/usr/bin/env python
"""What the model is fed: samples of a config's dataset after its pipeline (resize, crop, flip,
...), drawn with their labels, as PNGs.

    python tools/analysis/browse_dataset.py CONFIG [--split train|val|test] [--num 8]
                                            [--out-dir DIR] [--cfg-options k=v ...]

Segmentation: ``image | labels`` (the label map painted over the image, ignored pixels left
bare) with a legend of the classes present (``tools/_drawing.py``); detection: the ground-truth
boxes and masks drawn by mmdet's ``DetLocalVisualizer``. Written to ``--out-dir`` (default
``work_dirs/browse/<config name>/<split>``) as ``<index>_<image stem>.png``. As mmseg's
``browse_dataset.py``.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

LOADERS = {'train': 'train_dataloader', 'val': 'val_dataloader', 'test': 'test_dataloader'}


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Draw dataset samples after the pipeline, with '
                                            'their labels')
    p.add_argument('config', help='segmentation or detection config')
    p.add_argument('--split', choices=sorted(LOADERS), default='train',
                   help='which dataloader\'s dataset and pipeline (default train)')
    p.add_argument('--num', type=int, default=8, help='samples to draw (default 8)')
    p.add_argument('--out-dir', default=None,
                   help='default: work_dirs/browse/<config name>/<split>')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings, as key=value pairs')
    return p.parse_args(argv)


def draw_seg_sample(sample, classes, palette):
    import numpy as np

    from tools._drawing import compose, overlay
    img = sample['inputs'].permute(1, 2, 0).numpy()[..., ::-1]  # BGR (as loaded) -> RGB
    img = np.ascontiguousarray(img, dtype=np.uint8)
    label = sample['data_samples'].gt_sem_seg.data[0].numpy()
    present = [int(i) for i in np.unique(label) if i < len(classes)]
    return compose([img, overlay(img, label, palette)], ['pipeline output', 'labels'], classes,
                   palette, present=present, label_panels=[False, True])


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope', 'mmseg')
    from importlib import import_module
    import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    init_default_scope(scope)
    loader = cfg.get(LOADERS[args.split])
    if not loader:
        sys.exit(f'error: {args.config} has no {LOADERS[args.split]}')
    from engine.dataset_checks import check_dataset_paths
    problems = check_dataset_paths(loader.get('dataset'), f'{args.config}: {LOADERS[args.split]}')
    if problems:
        sys.exit('error: ' + '\n'.join(problems))
    dataset = DATASETS.build(loader.dataset)
    out_dir = args.out_dir or osp.join('work_dirs', 'browse',
                                       osp.splitext(osp.basename(args.config))[0], args.split)
    os.makedirs(out_dir, exist_ok=True)
    meta = dataset.metainfo
    classes = list(meta.get('classes') or [])
    palette = meta.get('palette')
    if palette is None:
        import numpy as np
        palette = np.random.default_rng(0).integers(0, 256, (len(classes), 3)).tolist()
    written = []
    for i in range(min(args.num, len(dataset))):
        sample = dataset[i]
        stem = osp.splitext(osp.basename(sample['data_samples'].metainfo.get('img_path',
                                                                             f'{i}')))[0]
        out = osp.join(out_dir, f'{i:04d}_{stem}.png')
        if scope == 'mmseg':
            import cv2
            drawn = draw_seg_sample(sample, classes, palette)
            cv2.imwrite(out, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
        else:
            from mmdet.visualization import DetLocalVisualizer
            vis = DetLocalVisualizer(name=f'browse{i}')
            vis.dataset_meta = meta
            img = sample['inputs'].permute(1, 2, 0).numpy()[..., ::-1]
            vis.add_datasample(stem, img, sample['data_samples'], draw_pred=False, show=False,
                               out_file=out)
        written.append(out)
    print(f'{len(written)} samples of the {args.split} set (after its pipeline) written to '
          f'{out_dir}')
    return written


if __name__ == '__main__':
    main()
