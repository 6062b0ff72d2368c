#!/usr/bin/env python
"""The body of ``make demo``: train and evaluate a tiny InternViT + UperNet on the CPU.

    python tools/demo.py [--config CONFIG] [--work-dir work_dirs/demo] [--iters N]

1. writes the synthetic ADE20K-format dataset (tools/dataset_converters/make_synthetic_ade.py)
   to the config's ``data_root`` (``data/synthetic_ade``) unless it is already there;
2. trains the demo config through MMEngine's Runner (mmseg's EncoderDecoder, our InternViT and
   SimpleFeaturePyramid, mmseg's UPerHead), evaluating with mmseg's IoUMetric at the end;
3. prints the mIoU and writes prediction overlays of validation images to ``WORK_DIR/vis``:
   titled panels (image | ground truth | prediction) with a legend of the class colours.

The terminal shows the progress lines and the result; the runner's start-up report (environment,
config, hook order) goes to the log file only (tools/_quiet.py).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
import time
from typing import Dict, Optional

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
from mmengine.config import Config  # noqa: E402
from mmengine.hooks import Hook  # noqa: E402

from tools._threads import add_threads_argument  # noqa: E402

DEFAULT_CONFIG = 'configs/demo/upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py'


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train + evaluate the tiny CPU demo')
    parser.add_argument('--config', default=osp.join(ROOT, DEFAULT_CONFIG))
    parser.add_argument('--work-dir', default=None,
                        help="defaults to the config's work_dir (work_dirs/demo)")
    parser.add_argument('--data-root', default=None,
                        help="defaults to the config's data_root (data/synthetic_ade)")
    parser.add_argument('--iters', type=int, default=None,
                        help="training iterations (the config's 600 by default)")
    parser.add_argument('--num-train', type=int, default=500)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-vis', type=int, default=8, help='overlays to write')
    add_threads_argument(parser)
    return parser.parse_args(argv)


def set_threads(threads: Optional[int]) -> int:
    """Intra-op threads for training: ``threads``, else OMP_NUM_THREADS, else the free cores
    less one for the data loader (tools/_threads.py).

    On a 2-core machine two OpenMP threads plus the data-loading worker oversubscribe the
    cores, and OpenMP's spinning barriers then make every small op of the tiny model 10-30x
    slower (measured: 0.08 s per iteration idle, 1-4 s with other work running).
    """
    from tools._threads import set_threads as _set
    return _set(threads)[0]


def ensure_dataset(data_root: str, num_classes: int, args: argparse.Namespace) -> bool:
    """Write the synthetic dataset unless ``data_root`` already holds one; True if written."""
    if osp.isdir(osp.join(data_root, 'images', 'training')) and \
            osp.isdir(osp.join(data_root, 'annotations', 'validation')):
        return False
    from tools.dataset_converters.make_synthetic_ade import make_dataset
    make_dataset(data_root, args.num_train, args.num_val, args.size, num_classes, args.seed)
    return True


def set_iters(cfg: Config, iters: int) -> None:
    """Shorten the schedule to ``iters`` (warmup, poly end, evaluation, checkpoint)."""
    cfg.train_cfg.max_iters = iters
    cfg.train_cfg.val_interval = iters
    warmup = max(1, min(50, iters // 4))
    cfg.param_scheduler[0].end = warmup
    cfg.param_scheduler[1].begin = warmup
    cfg.param_scheduler[1].end = iters
    cfg.default_hooks.checkpoint.interval = iters
    cfg.default_hooks.logger.interval = max(1, min(50, iters // 4))


class MetricsHook(Hook):
    """Keeps the metrics of the last evaluation."""

    def __init__(self) -> None:
        self.metrics: Dict[str, float] = {}

    def after_val_epoch(self, runner, metrics: Optional[Dict[str, float]] = None) -> None:
        self.metrics = dict(metrics or {})


def write_overlays(model, cfg: Config, data_root: str, out_dir: str, num: int) -> int:
    """Image | ground truth | prediction overlays of the first ``num`` validation images,
    titled, with a legend of the classes shown (tools/_drawing.py)."""
    from mmseg.apis import inference_model
    from PIL import Image

    from tools._drawing import draw_segmentation

    os.makedirs(out_dir, exist_ok=True)
    palette = np.asarray(cfg.metainfo['palette'], np.uint8)
    classes = list(cfg.metainfo['classes'])
    img_dir = osp.join(data_root, 'images', 'validation')
    ann_dir = osp.join(data_root, 'annotations', 'validation')
    model.cfg = cfg
    model.eval()
    names = sorted(f for f in os.listdir(img_dir) if f.endswith('.jpg'))[:num]
    for name in names:
        img_path = osp.join(img_dir, name)
        result = inference_model(model, img_path)
        pred = result.pred_sem_seg.data[0].cpu().numpy().astype(np.int64)
        img = np.asarray(Image.open(img_path).convert('RGB'))
        gt = np.asarray(Image.open(osp.join(ann_dir, name[:-4] + '.png'))).astype(np.int64)
        gt = np.where(gt == 0, 255, gt - 1)  # reduce_zero_label: 0 -> ignore, k -> k - 1
        drawn = draw_segmentation(img, pred, classes, palette, gt=gt)
        Image.fromarray(drawn).save(osp.join(out_dir, name[:-4] + '.png'))
    return len(names)


def main(argv=None) -> Dict[str, float]:
    args = parse_args(argv)
    t0 = time.time()
    from tools._quiet import quiet_upstream_warnings
    quiet_upstream_warnings()
    threads = set_threads(args.threads)
    from mmengine.runner import Runner
    from mmseg.utils import register_all_modules
    register_all_modules(init_default_scope=False)

    cfg = Config.fromfile(args.config)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    data_root = args.data_root or cfg.train_dataloader.dataset.data_root
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = data_root
    if args.iters is not None:
        set_iters(cfg, args.iters)

    wrote = ensure_dataset(data_root, len(cfg.metainfo['classes']), args)
    print(f"[demo] dataset {data_root}: {'written' if wrote else 'already there'} "
          f'({time.time() - t0:.1f} s)', flush=True)

    runner = Runner.from_cfg(cfg)
    metrics_hook = MetricsHook()
    runner.register_hook(metrics_hook, priority='LOWEST')
    t_train = time.time()
    runner.train()
    train_s = time.time() - t_train
    metrics = metrics_hook.metrics
    if 'mIoU' not in metrics:
        raise RuntimeError(f'the demo run produced no mIoU (metrics: {metrics})')

    vis_dir = osp.join(cfg.work_dir, 'vis')
    n_vis = write_overlays(runner.model, cfg, data_root, vis_dir, args.num_vis)
    total_s = time.time() - t0
    print(f"[demo] {cfg.train_cfg.max_iters} iterations + evaluation in {train_s:.0f} s "
          f'(total {total_s:.0f} s, {threads} torch thread(s))')
    num_val = len(os.listdir(osp.join(data_root, 'images', 'validation')))
    print(f"[demo] mIoU {metrics['mIoU']:.2f}  aAcc {metrics.get('aAcc', float('nan')):.2f}  "
          f"mAcc {metrics.get('mAcc', float('nan')):.2f}  on {num_val} validation images")
    print(f'[demo] {n_vis} overlays (image | ground truth | prediction) in {vis_dir}')
    return dict(metrics, train_s=train_s, total_s=total_s)


if __name__ == '__main__':
    main()
