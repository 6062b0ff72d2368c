#!/usr/bin/env python
"""Confusion matrix of a segmentation test run, from the label maps ``tools/test.py --out``
wrote, as a PNG (and printed).

    python tools/test.py CONFIG CKPT --out work_dirs/pred
    python tools/analysis/confusion_matrix.py CONFIG work_dirs/pred [--out cm.png]
                                              [--no-normalize] [--cfg-options k=v ...]

Each prediction ``PRED_DIR/<image stem>.png`` is matched with the ground truth of the config's
test dataset (``test_dataloader.dataset``: its ``data_root``, ``data_prefix.seg_map_path``,
``seg_map_suffix``). Both are in the dataset's annotation convention (IoUMetric adds 1 back
when the dataset has ``reduce_zero_label``), so the same ``reduce_zero_label`` is applied to
both; pixels whose ground truth is 255 (ignore) are left out. Rows: ground truth, columns:
prediction; normalized per row (the fraction of each true class predicted as each class) unless
``--no-normalize``. As mmseg's ``confusion_matrix.py``, which reads a results pickle instead.
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import List, Sequence, Tuple

import numpy as np

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def reduce_zero(label: np.ndarray) -> np.ndarray:
    """mmseg's reduce_zero_label: 0 -> 255 (ignore), k -> k - 1."""
    label = label.astype(np.int64)
    return np.where(label == 0, 255, label - 1)


def confusion(pairs: Sequence[Tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """(K, K) pixel counts, rows ground truth, columns prediction; gt outside [0, K) ignored;
    predictions outside [0, K) are an error."""
    matrix = np.zeros((num_classes, num_classes), np.int64)
    for gt, pred in pairs:
        if gt.shape != pred.shape:
            raise ValueError(f'prediction {pred.shape} and ground truth {gt.shape} differ in size')
        keep = (gt >= 0) & (gt < num_classes)
        g, p = gt[keep], pred[keep]
        if p.size and (p.min() < 0 or p.max() >= num_classes):
            bad = sorted(set(np.unique(p).tolist()) - set(range(num_classes)))
            raise ValueError(f'predicted labels {bad} outside 0..{num_classes - 1}')
        matrix += np.bincount(g * num_classes + p, minlength=num_classes ** 2).reshape(
            num_classes, num_classes)
    return matrix


def plot(matrix: np.ndarray, classes: Sequence[str], out: str, normalize: bool = True) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    k = len(classes)
    values = matrix / np.maximum(matrix.sum(1, keepdims=True), 1) if normalize else matrix
    size = max(4.0, 0.5 * k + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9))
    im = ax.imshow(values, cmap='Blues', vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(k), classes, rotation=45, ha='right')
    ax.set_yticks(range(k), classes)
    ax.set_xlabel('prediction')
    ax.set_ylabel('ground truth')
    ax.set_title('confusion matrix' + (' (each row sums to 1)' if normalize else ' (pixels)'))
    if k <= 30:
        for i in range(k):
            for j in range(k):
                v = values[i, j]
                ax.text(j, i, f'{v:.2f}' if normalize else f'{int(v)}', ha='center',
                        va='center', fontsize=8, color='white' if v > values.max() / 2 else 'black')
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def dataset_info(cfg) -> Tuple[str, str, bool, List[str]]:
    """(annotation folder, suffix, reduce_zero_label, class names) of the test dataset."""
    from mmengine.registry import DATASETS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ds = cfg.test_dataloader.dataset.copy()
    while 'dataset' in ds:
        ds = ds['dataset'].copy()
    ann_dir = osp.join(ds.get('data_root', ''), (ds.get('data_prefix') or {}).get(
        'seg_map_path', ''))
    suffix = ds.get('seg_map_suffix', '.png')
    ds['lazy_init'] = True
    dataset = DATASETS.build(ds)
    return (ann_dir, suffix, bool(getattr(dataset, 'reduce_zero_label', False)),
            list(dataset.metainfo['classes']))


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Confusion matrix (PNG) of the label maps that '
                                            'tools/test.py --out wrote')
    p.add_argument('config', help='the segmentation config that was tested')
    p.add_argument('pred_dir', help='the folder given to tools/test.py --out')
    p.add_argument('--out', default='confusion_matrix.png', help='PNG to write')
    p.add_argument('--no-normalize', action='store_true', help='pixel counts, not row fractions')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings, e.g. test_dataloader.dataset.data_root=...')
    return p.parse_args(argv)


def main(argv=None) -> np.ndarray:
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    if not osp.isdir(args.pred_dir):
        sys.exit(f'error: prediction folder not found: {args.pred_dir} (write it with '
                 f'tools/test.py CONFIG CKPT --out {args.pred_dir})')
    from mmengine.config import Config
    from PIL import Image
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    from importlib import import_module
    import_module(f'{cfg.get("default_scope", "mmseg")}.utils').register_all_modules(
        init_default_scope=False)
    ann_dir, suffix, reduce, classes = dataset_info(cfg)
    preds = sorted(f for f in os.listdir(args.pred_dir) if f.endswith('.png'))
    if not preds:
        sys.exit(f'error: no .png predictions in {args.pred_dir}')
    pairs, missing = [], []
    for name in preds:
        gt_path = osp.join(ann_dir, osp.splitext(name)[0] + suffix)
        if not osp.isfile(gt_path):
            missing.append(gt_path)
            continue
        gt = np.asarray(Image.open(gt_path)).astype(np.int64)
        pred = np.asarray(Image.open(osp.join(args.pred_dir, name))).astype(np.int64)
        if reduce:
            gt, pred = reduce_zero(gt), reduce_zero(pred)
        pairs.append((gt, pred))
    if missing:
        sys.exit(f'error: no ground truth for {len(missing)} prediction(s), e.g. {missing[0]}')
    try:
        matrix = confusion(pairs, len(classes))
    except ValueError as e:
        sys.exit(f'error: {e}')
    plot(matrix, classes, args.out, normalize=not args.no_normalize)
    width = max(len(c) for c in classes)
    rows = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    print(f'{"":>{width}}  ' + '  '.join(f'{c[:8]:>8}' for c in classes))
    for c, row in zip(classes, rows):
        print(f'{c:>{width}}  ' + '  '.join(f'{v:>8.3f}' for v in row))
    print(f'confusion matrix of {len(pairs)} images written to {args.out}')
    return matrix


if __name__ == '__main__':
    main()
