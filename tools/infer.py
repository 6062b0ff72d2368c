#!/usr/bin/env python
"""Run a trained detector or segmentor on images and write the drawn results.

    python tools/infer.py CONFIG CKPT INPUT [INPUT ...] [--out-dir DIR | --out-file OUT]
                          [--device cpu|cuda:0] [--score-thr 0.3] [--opacity 0.55]
                          [--non-strict] [--max-pixels N] [--threads N]

INPUT is an image, a folder (its images, not recursive) or a glob (``'data/*.jpg'``, quoted;
``**`` recurses); all of them run in one process, so the start-up (importing torch and the
toolboxes, building the model) is paid once. Each drawing goes to ``--out-dir`` (default
``work_dirs/infer/<config name>``) as ``<image stem>.png`` (``<sub/folder>/<stem>.png`` when the
inputs span folders); ``--out-file`` names the output of a single image instead.

The task is chosen by the config's ``default_scope``: ``mmdet`` configs draw the predicted boxes,
labels and instance masks above ``--score-thr`` (mmdet's ``inference_detector`` and
``DetLocalVisualizer``); ``mmseg`` configs draw ``image | prediction`` with the classes' names in a
legend (``tools/_drawing.py``; mmseg's ``inference_model``). Large images are drawn at reduced
resolution.

CKPT is read with ``torch.load(weights_only=True)`` (``engine/checkpoints/safe_load.py``) and
loaded strictly, as ``tools/test.py`` does: a checkpoint whose keys or shapes differ from the
config's model (heads missing, another ``num_classes``) is an error naming them, unless
``--non-strict``. Images above ``--max-pixels`` (inference keeps several float32 maps per pixel)
and images smaller than one patch are refused before anything runs, naming the image and its size.
"""
from __future__ import annotations

import argparse
import glob
import os
import os.path as osp
import sys
from typing import List, Optional, Sequence

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

from tools._threads import add_threads_argument  # noqa: E402

TASKS = {'mmdet': 'detection', 'mmseg': 'segmentation'}
IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')
OUT_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')  # cv2.imwrite's
# 4096 x 4096: inference keeps float32 logits per class and pixel at full resolution
# (a 12000 x 12000 image took more than this machine's 23 GB)
DEFAULT_MAX_PIXELS = 4096 * 4096
MIN_SIDE = 2  # pixels; below that the resize of the test pipeline leaves an empty axis


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw the predictions of a detector or segmentor on images (files, '
                    'folders or globs, all in one process)')
    parser.add_argument('config', help='config file (mmdet or mmseg, by its default_scope)')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('inputs', nargs='+', metavar='INPUT',
                        help='image file, folder of images, or glob (quoted)')
    parser.add_argument('--out-dir', default=None,
                        help='folder for the drawings (default: work_dirs/infer/<config name>)')
    parser.add_argument('--out-file', default=None,
                        help=f'output file for a single image ({", ".join(OUT_EXTENSIONS)})')
    parser.add_argument('--device', default='cpu', help='device, e.g. cpu or cuda:0')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='detection: draw instances scoring at least this')
    parser.add_argument('--opacity', type=float, default=0.55,
                        help='segmentation: opacity of the drawn label map')
    parser.add_argument('--non-strict', action='store_true',
                        help='load CKPT even if its keys or shapes differ from the model '
                             '(default: such a checkpoint is an error naming the keys)')
    parser.add_argument('--max-pixels', type=int, default=DEFAULT_MAX_PIXELS,
                        help=f'refuse larger images (default {DEFAULT_MAX_PIXELS}: 4096 x 4096)')
    add_threads_argument(parser)
    args = parser.parse_args(argv)

    for name in ('config', 'checkpoint'):
        path = getattr(args, name)
        if osp.isdir(path):
            parser.error(f'{name} {path} is a directory, not a file')
        if not osp.isfile(path):
            parser.error(f'{name} not found: {path}')
    if args.out_file is not None:
        if osp.isdir(args.out_file):
            parser.error(f'--out-file {args.out_file} is a directory; use --out-dir for a folder')
        if osp.splitext(args.out_file)[1].lower() not in OUT_EXTENSIONS:
            parser.error(f'--out-file {args.out_file}: unknown image extension '
                         f'{osp.splitext(args.out_file)[1] or "(none)"}; use one of '
                         f'{", ".join(OUT_EXTENSIONS)}')
        if args.out_dir is not None:
            parser.error('give --out-file or --out-dir, not both')
    if args.out_dir is not None and osp.exists(args.out_dir) and not osp.isdir(args.out_dir):
        parser.error(f'--out-dir {args.out_dir} is a file, not a folder')
    try:
        args.images = expand_inputs(args.inputs)
    except ValueError as e:
        parser.error(str(e))
    if args.out_file is not None and len(args.images) != 1:
        parser.error(f'--out-file names one output but the inputs hold {len(args.images)} '
                     f'images; use --out-dir')
    problems = [p for p in (check_image(path, args.max_pixels) for path in args.images) if p]
    if problems:
        parser.error('\n'.join(problems))
    if args.out_dir is None:
        args.out_dir = osp.join('work_dirs', 'infer',
                                osp.splitext(osp.basename(args.config))[0])
    return args


def expand_inputs(inputs: Sequence[str]) -> List[str]:
    """Image paths of files, folders (their images, sorted) and globs, in order, once each."""
    images: List[str] = []
    for item in inputs:
        if osp.isdir(item):
            found = sorted(osp.join(item, f) for f in os.listdir(item)
                           if f.lower().endswith(IMG_EXTENSIONS)
                           and osp.isfile(osp.join(item, f)))
            if not found:
                raise ValueError(f'{item} is a directory with no images '
                                 f'({", ".join(IMG_EXTENSIONS)})')
        elif osp.isfile(item):
            found = [item]
        elif glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True)
                           if osp.isfile(p) and p.lower().endswith(IMG_EXTENSIONS))
            if not found:
                raise ValueError(f'no images match {item}')
        else:
            raise ValueError(f'image not found: {item}')
        images += found
    return list(dict.fromkeys(images))


def check_image(path: str, max_pixels: int) -> Optional[str]:
    """Why ``path`` cannot be run (unreadable, too large, too small), or None. Reads the
    header only."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            w, h = im.size
    except Exception as e:  # PIL raises many kinds for a file that is not an image
        return f'{path}: not a readable image ({type(e).__name__}: {e})'
    if w * h > max_pixels:
        return (f'{path}: {w} x {h} = {w * h} pixels is more than --max-pixels {max_pixels} '
                f'(inference keeps float32 maps of every pixel); downscale the image or raise '
                f'--max-pixels')
    if min(w, h) < MIN_SIDE:
        return (f'{path}: {w} x {h} is too small to segment or detect anything (each side '
                f'needs at least {MIN_SIDE} pixels)')
    return None


def output_paths(images: Sequence[str], out_dir: str) -> List[str]:
    """``out_dir/<stem>.png``; where the inputs span folders, their paths below the folder
    they share are kept, so that two ``0.jpg`` never overwrite each other."""
    dirs = {osp.dirname(osp.abspath(p)) for p in images}
    base = dirs.pop() if len(dirs) == 1 else osp.commonpath(
        [osp.dirname(osp.abspath(p)) for p in images])
    return [osp.join(out_dir, osp.splitext(osp.relpath(osp.abspath(p), base))[0] + '.png')
            for p in images]


def task_of(cfg) -> str:
    """``'detection'`` or ``'segmentation'`` from the config's ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope not in TASKS:
        raise ValueError(f'default_scope must be one of {sorted(TASKS)} to tell the task, '
                         f'got {scope!r}')
    return TASKS[scope]


def config_metainfo(cfg) -> dict:
    """Class names and palette of the config's test dataset (no annotation read)."""
    from mmengine.registry import DATASETS
    dataset = cfg.get('test_dataloader', {}).get('dataset')
    if not dataset:
        return {}
    dataset = dataset.copy()
    while 'dataset' in dataset:  # wrappers
        dataset = dataset['dataset'].copy()
    try:
        dataset['lazy_init'] = True
        return dict(DATASETS.build(dataset).metainfo)
    except Exception:  # a dataset that cannot be built here (missing files): its config keys
        return dict(dataset.get('metainfo') or {})


def build_model(cfg, checkpoint: str, device: str, strict: bool):
    """The config's model with CKPT loaded (strictly unless told otherwise), in eval mode, with
    ``dataset_meta`` from the checkpoint or else the config's dataset."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    init_default_scope(cfg.get('default_scope'))
    cfg.model.pop('pretrained', None)
    if isinstance(cfg.model.get('backbone'), dict):
        cfg.model.backbone.init_cfg = None  # the checkpoint holds the weights
    if cfg.get('default_scope') == 'mmseg':
        cfg.model.train_cfg = None
    model = revert_sync_batchnorm(MODELS.build(cfg.model))
    ckpt = load_checkpoint(model, checkpoint, map_location='cpu', strict=strict,
                           logger='silent')
    meta = (ckpt.get('meta') or {}).get('dataset_meta') if isinstance(ckpt, dict) else None
    model.dataset_meta = dict(config_metainfo(cfg), **(meta or {}))
    model.cfg = cfg
    return model.to(device).eval()


def draw_detection(model, image: str, result, out_file: str, score_thr: float) -> int:
    """Boxes, labels and masks above ``score_thr``; returns how many were drawn."""
    import mmcv
    from mmdet.visualization import DetLocalVisualizer

    visualizer = DetLocalVisualizer(name='infer')  # no vis_backends: nothing but out_file
    visualizer.dataset_meta = model.dataset_meta
    visualizer.add_datasample('result', mmcv.imread(image, channel_order='rgb'),
                              data_sample=result, draw_gt=False, show=False,
                              pred_score_thr=score_thr, out_file=out_file)
    return int((result.pred_instances.scores >= score_thr).sum())


def draw_seg(model, image: str, result, out_file: str, opacity: float) -> List[str]:
    """``image | prediction`` with a legend; returns the names of the classes found."""
    import cv2
    import numpy as np

    from tools._drawing import draw_segmentation
    meta = model.dataset_meta
    classes = meta.get('classes') or [str(i) for i in range(model.decode_head.num_classes)]
    palette = meta.get('palette')
    if palette is None:
        palette = np.random.default_rng(0).integers(0, 256, (len(classes), 3))
    img = cv2.cvtColor(cv2.imread(image, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    pred = result.pred_sem_seg.data[0].cpu().numpy()
    drawn = draw_segmentation(img, pred, classes, palette, opacity=opacity)
    if not cv2.imwrite(out_file, cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {out_file}')
    return [classes[i] for i in np.unique(pred) if i < len(classes)]


def main(argv: Optional[Sequence[str]] = None) -> List[str]:
    args = parse_args(argv)
    from tools._quiet import quiet_upstream_warnings
    quiet_upstream_warnings()
    from tools._threads import set_threads
    set_threads(args.threads)
    from mmengine.config import Config

    from engine.checkpoints.safe_load import patch_mmengine_checkpoint_loading

    patch_mmengine_checkpoint_loading()
    cfg = Config.fromfile(args.config)  # also imports cfg.custom_imports (backbones, ...)
    task = task_of(cfg)
    from importlib import import_module
    import_module(f'{cfg.default_scope}.utils').register_all_modules(init_default_scope=False)
    try:
        model = build_model(cfg, args.checkpoint, args.device, strict=not args.non_strict)
    except RuntimeError as e:
        if args.non_strict or 'state_dict' not in str(e):
            raise
        sys.exit(f'error: {args.checkpoint} does not match the model of {args.config} '
                 f'(use --non-strict to load it anyway):\n{e}')

    outs = [args.out_file] if args.out_file else output_paths(args.images, args.out_dir)
    if task == 'detection':
        from mmdet.apis import inference_detector as infer
    else:
        from mmseg.apis import inference_model as infer
    failed = []
    for image, out in zip(args.images, outs):
        os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)
        try:
            result = infer(model, image)
        except (RuntimeError, ValueError, IndexError) as e:
            # e.g. a 2000 x 3 image: the test pipeline's resize leaves one row of tokens,
            # which the pyramid's pooling cannot halve
            from PIL import Image
            with Image.open(image) as im:
                w, h = im.size
            msg = f'{image}: the {w} x {h} image failed in the model ({type(e).__name__}: ' \
                  f'{str(e).splitlines()[0] if str(e) else ""})'
            if w / h > 50 or h / w > 50:
                msg += '; its aspect ratio is too extreme for the test pipeline\'s resize'
            print(f'error: {msg}', file=sys.stderr)
            failed.append(image)
            continue
        if task == 'detection':
            n = draw_detection(model, image, result, out, args.score_thr)
            print(f'{image}: {n} instances with score >= {args.score_thr} drawn to {out}')
        else:
            found = draw_seg(model, image, result, out, args.opacity)
            print(f'{image}: segmentation overlay written to {out} '
                  f'({", ".join(found) or "no class"})')
    where = args.out_file or args.out_dir
    print(f'{len(outs) - len(failed)} drawing(s) written to {where}')
    if failed:
        sys.exit(f'error: {len(failed)} of {len(outs)} image(s) failed: {", ".join(failed)}')
    return outs


if __name__ == '__main__':
    main()
