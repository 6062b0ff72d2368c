#!/usr/bin/env python
"""Write a small synthetic COCO-format instance segmentation dataset, for demos and tests.

    python tools/dataset_converters/make_synthetic_coco.py data/synthetic_coco \
        --num-train 400 --num-val 50 --size 128 --seed 0 [--overwrite]

OUT_DIR must be empty or absent: ``--overwrite`` replaces a dataset this tool wrote there.

Layout (as COCO 2017, with ``train``/``val`` for ``train2017``/``val2017``)::

    OUT_DIR/train/synth_train_00000.jpg ...
    OUT_DIR/val/synth_val_00000.jpg ...
    OUT_DIR/annotations/instances_train.json
    OUT_DIR/annotations/instances_val.json

Every image holds 1-4 non-overlapping objects on a noisy background. The category of an object is
its shape (``disc``, ``square``, ``triangle``, ``star``); its fill is a random texture (stripes,
checker or dots) in two random colors, so neither color nor texture tells the categories apart.
Each object is drawn from its polygon, which is also its annotation: ``segmentation`` is one
polygon ``[x1, y1, x2, y2, ...]`` that lies inside the image, ``bbox`` is the polygon's
``[x, y, w, h]``, ``area`` its (shoelace) area, ``iscrowd`` 0. Category ids are 1..4, image and
annotation ids start at 1.

The output is a deterministic function of the arguments: image ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split, i])``, so it does not depend on the number of images.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, ROOT)
# the same folder rules as the ADE20K-format maker
from tools.dataset_converters.make_synthetic_ade import prepare_out_dir  # noqa: E402

CLASSES: Tuple[str, ...] = ('disc', 'square', 'triangle', 'star')
TEXTURES = ('stripes', 'checker', 'dots')
PALETTE: Tuple[Tuple[int, int, int], ...] = ((230, 25, 75), (60, 180, 75), (0, 130, 200),
                                             (245, 130, 48))
SPLITS = {'train': 0, 'val': 1}
MAX_OBJECTS = 4


# --------------------------------------------------------------------------- geometry
def shape_polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> np.ndarray:
    """(N, 2) vertices (x, y) of a shape of circumradius ``r`` centred at (cx, cy)."""
    if kind == 'disc':
        t = np.linspace(0, 2 * np.pi, 32, endpoint=False)
        rad = np.full_like(t, r)
    elif kind == 'square':
        t = angle + np.pi / 4 + np.arange(4) * np.pi / 2
        rad = np.full_like(t, r)
    elif kind == 'triangle':
        t = angle + np.arange(3) * 2 * np.pi / 3
        rad = np.full_like(t, r)
    elif kind == 'star':
        t = angle + np.arange(10) * np.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, r, 0.45 * r)
    else:
        raise ValueError(f'unknown shape {kind!r}; expected one of {CLASSES}')
    return np.stack([cx + rad * np.cos(t), cy + rad * np.sin(t)], axis=1)


def polygon_area(poly: np.ndarray) -> float:
    """Shoelace area of a simple polygon given as (N, 2) vertices."""
    x, y = poly[:, 0], poly[:, 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def polygon_bbox(poly: np.ndarray) -> List[float]:
    """COCO ``[x, y, w, h]`` of a polygon."""
    x0, y0 = poly.min(axis=0)
    x1, y1 = poly.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


# --------------------------------------------------------------------------- drawing
def _texture(kind: str, size: int, period: float, angle: float) -> np.ndarray:
    """A binary (size, size) float pattern."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == 'stripes':
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if kind == 'checker':
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'dots':
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return (du ** 2 + dv ** 2 < (0.32 * period) ** 2).astype(np.float32)
    raise ValueError(kind)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random color field plus pixel noise, float (size, size, 3)."""
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC),
                       dtype=np.float32)
    return field + rng.normal(0, 14, size=(size, size, 3))


def _contrasting_colors(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    while True:
        c1, c2 = rng.uniform(0, 255, size=(2, 3))
        if np.abs(c1 - c2).sum() > 150:
            return c1, c2


def _rasterize(poly: np.ndarray, size: int) -> np.ndarray:
    canvas = Image.new('L', (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in poly.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)


def make_sample(rng: np.random.Generator, size: int) -> Tuple[np.ndarray, List[dict]]:
    """One (size, size, 3) uint8 image and its objects (``category_id`` 1-based, ``polygon``)."""
    img = _background(rng, size)
    objects: List[dict] = []
    placed: List[Tuple[float, float, float]] = []  # (cx, cy, r) of the objects so far
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(num_objects):
        label = int(rng.integers(len(CLASSES)))
        # Rejection sampling: the whole shape inside the image, no overlap with earlier ones.
        for _attempt in range(20):
            r = rng.uniform(0.09, 0.22) * size
            cx, cy = rng.uniform(r + 1, size - r - 1, size=2)
            if all((cx - x) ** 2 + (cy - y) ** 2 > (r + q + 2) ** 2 for x, y, q in placed):
                break
        else:
            continue
        poly = shape_polygon(CLASSES[label], cx, cy, r, rng.uniform(0, 2 * np.pi))
        mask = _rasterize(poly, size)
        pattern = _texture(TEXTURES[int(rng.integers(len(TEXTURES)))], size,
                           rng.uniform(0.04, 0.07) * size, rng.uniform(0, np.pi))
        c1, c2 = _contrasting_colors(rng)
        fill = pattern[..., None] * c1 + (1 - pattern[..., None]) * c2
        img[mask] = fill[mask]
        placed.append((cx, cy, r))
        objects.append(dict(category_id=label + 1, polygon=poly))
    img += rng.normal(0, 5, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), objects


# --------------------------------------------------------------------------- writing
def categories() -> List[dict]:
    return [dict(id=i + 1, name=name, supercategory='shape') for i, name in enumerate(CLASSES)]


def write_split(out_dir: str, split: str, num: int, size: int, seed: int) -> dict:
    """Write the images of one split and return its COCO dict (also written to json)."""
    img_dir = osp.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(osp.join(out_dir, 'annotations'), exist_ok=True)
    images, annotations = [], []
    for i in range(num):
        rng = np.random.default_rng([seed, SPLITS[split], i])
        img, objects = make_sample(rng, size)
        file_name = f'synth_{split}_{i:05d}.jpg'
        Image.fromarray(img).save(osp.join(img_dir, file_name), quality=92)
        image_id = i + 1
        images.append(dict(id=image_id, file_name=file_name, height=size, width=size))
        for obj in objects:
            poly = np.round(obj['polygon'], 2)
            annotations.append(dict(
                id=len(annotations) + 1, image_id=image_id, category_id=obj['category_id'],
                segmentation=[[float(v) for v in poly.reshape(-1)]],
                area=round(polygon_area(poly), 2),
                bbox=[round(v, 2) for v in polygon_bbox(poly)], iscrowd=0))
    coco = dict(
        info=dict(description=f'synthetic shapes ({split}), seed {seed}', version='1.0'),
        licenses=[], images=images, annotations=annotations, categories=categories())
    with open(osp.join(out_dir, 'annotations', f'instances_{split}.json'), 'w') as f:
        json.dump(coco, f)
    return coco


def make_dataset(out_dir: str, num_train: int = 400, num_val: int = 50, size: int = 128,
                 seed: int = 0, overwrite: bool = False) -> Dict[str, dict]:
    """Write both splits; returns ``{'train': coco_dict, 'val': coco_dict}``.

    ``out_dir`` must be empty or absent; ``overwrite=True`` first removes a dataset this
    function wrote there (see :func:`prepare_out_dir`)."""
    if size < 32:
        raise ValueError(f'--size must be at least 32, got {size}')
    if num_train < 0 or num_val < 0:
        raise ValueError(f'--num-train and --num-val must not be negative, got {num_train} and '
                         f'{num_val}')
    prepare_out_dir(out_dir, ('train', 'val', 'annotations'), overwrite)
    return {split: write_split(out_dir, split, n, size, seed)
            for split, n in (('train', num_train), ('val', num_val))}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='output folder (e.g. data/synthetic_coco)')
    parser.add_argument('--num-train', type=int, default=400)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the dataset an earlier run wrote into OUT_DIR')
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = parse_args(argv)
    try:
        out = make_dataset(args.out_dir, args.num_train, args.num_val, args.size, args.seed,
                           overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    print(f"wrote {args.num_train} training images ({len(out['train']['annotations'])} "
          f"objects) and {args.num_val} validation images ({len(out['val']['annotations'])} "
          f"objects), {args.size}x{args.size}, categories {list(CLASSES)}, to {args.out_dir}")


if __name__ == '__main__':
    main()
