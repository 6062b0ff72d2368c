#!/usr/bin/env python
"""Run a trained detector or segmentor on one image and write the drawn result.

    python tools/infer.py CONFIG CKPT IMAGE [--out-file OUT] [--device cpu|cuda:0]
                          [--score-thr 0.3] [--opacity 0.5]

The task is chosen by the config's ``default_scope``: ``mmdet`` configs draw the predicted boxes,
labels and instance masks above ``--score-thr`` (mmdet's ``init_detector`` /
``inference_detector`` and ``DetLocalVisualizer``); ``mmseg`` configs draw the predicted label map
over the image with ``--opacity`` (mmseg's ``init_model`` / ``inference_model`` /
``show_result_pyplot``). The output defaults to ``<image stem>_pred.png`` next to the working
directory. Checkpoints are read with ``torch.load(weights_only=True)``
(``engine/checkpoints/safe_load.py``).
"""
from __future__ import annotations

import argparse
import os
import os.path as osp
import sys
from typing import Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw the prediction of a detector or '
                                                 'segmentor on one image')
    parser.add_argument('config', help='config file (mmdet or mmseg, by its default_scope)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('image', help='image file')
    parser.add_argument('--out-file', default=None,
                        help='where to write the drawing (default: <image stem>_pred.png)')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw instances scoring at least this')
    parser.add_argument('--opacity', type=float, default=0.5,
                        help='segmentation: opacity of the drawn label map')
    args = parser.parse_args(argv)
    for name in ('config', 'checkpoint', 'image'):
        if not osp.isfile(getattr(args, name)):
            parser.error(f'{name} not found: {getattr(args, name)}')
    if args.out_file is None:
        args.out_file = osp.splitext(osp.basename(args.image))[0] + '_pred.png'
    return args


def task_of(cfg) -> str:
    """``'detection'`` or ``'segmentation'`` from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'default_scope must be one of {sorted(TASKS)} to tell the task, '
                         f'got {scope!r}')
    return TASKS[scope]


def infer_detection(cfg, checkpoint: str, image: str, out_file: str, device: str,
                    score_thr: float):
    """Detect instances in ``image`` and write boxes + masks to ``out_file``."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS

    model = init_detector(cfg, checkpoint, device=device)
    result = inference_detector(model, image)
    visualizer = VISUALIZERS.build(model.cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('result', mmcv.imread(image, channel_order='rgb'),
                              data_sample=result, draw_gt=False, show=False,
                              pred_score_thr=score_thr, out_file=out_file)
    return result


def infer_segmentation(cfg, checkpoint: str, image: str, out_file: str, device: str,
                       opacity: float):
    """Segment ``image`` and write the label-map overlay to ``out_file``."""
    from mmseg.apis import inference_model, init_model, show_result_pyplot

    model = init_model(cfg, checkpoint, device=device)
    result = inference_model(model, image)
    show_result_pyplot(model, image, result, opacity=opacity, draw_gt=False, show=False,
                       out_file=out_file)
    return result


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    from mmengine.config import Config

    from engine.checkpoints.safe_load import patch_mmengine_checkpoint_loading

    patch_mmengine_checkpoint_loading()
    cfg = Config.fromfile(args.config)  # also imports cfg.custom_imports (backbones, ...)
    task = task_of(cfg)
    out_dir = osp.dirname(osp.abspath(args.out_file))
    os.makedirs(out_dir, exist_ok=True)
    if task == 'detection':
        result = infer_detection(cfg, args.checkpoint, args.image, args.out_file, args.device,
                                 args.score_thr)
        n = int((result.pred_instances.scores >= args.score_thr).sum())
        print(f'{n} instances with score >= {args.score_thr} drawn to {args.out_file}')
    else:
        infer_segmentation(cfg, args.checkpoint, args.image, args.out_file, args.device,
                           args.opacity)
        print(f'segmentation overlay written to {args.out_file}')


if __name__ == '__main__':
    main()
