#!/usr/bin/env python
"""Write a small synthetic dataset in the ADE20K layout, for demos and tests.

    python tools/dataset_converters/make_synthetic_ade.py data/synthetic_ade \
        --num-train 500 --num-val 50 --size 128 --num-classes 4 --seed 0 [--overwrite]

OUT_DIR must be empty or absent: ``--overwrite`` replaces a dataset this tool wrote there.

Layout (as ``ADEChallengeData2016``)::

    OUT_DIR/images/{training,validation}/synth_{split}_00000.jpg
    OUT_DIR/annotations/{training,validation}/synth_{split}_00000.png
    OUT_DIR/classes.json          class names and palette, for configs and overlays

Labels follow ADE20K: 0 = unlabeled (ignored once ``reduce_zero_label`` maps it to 255), classes
are 1..K. Class 1 is the background, a smooth random color field with pixel noise; classes 2..K
are textures (stripes, checker, dots, grid, rings) filling objects of random shape (disc, box,
triangle), size, position and orientation. Every object gets two random colors, so color says
nothing about the class: the texture tells what an object is and its outline where it ends. A
one-pixel band along every object border is unlabeled (0), as ADE20K's ambiguous boundary pixels.

The output is a deterministic function of the arguments: image ``i`` of a split is drawn from
``numpy.random.default_rng([seed, split, i])``, so it does not depend on the number of images.
"""
from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import shutil
import sys
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image

# One object class per texture, in this order (the default --num-classes 4 uses the first three).
TEXTURES = ('stripes', 'checker', 'dots', 'grid', 'rings')
SHAPES = ('disc', 'box', 'triangle')
MAX_CLASSES = 1 + len(TEXTURES)
SPLITS = {'training': 0, 'validation': 1}
# Drawing parameters, as fractions of the image side where they are lengths.
# Tuned so that the 4-block, 64-wide demo InternViT (patch 14) learns the default 3 textures in
# a few hundred iterations: periods of 6-9 px (about two per patch), textures within 17 degrees
# of the axes, objects 50-90 px across.
RADIUS_RANGE = (0.2, 0.35)       # object size (radius)
PERIOD_RANGE = (0.05, 0.07)      # texture period
ANGLE_RANGE = (-0.3, 0.3)        # texture orientation (radians)
MAX_OBJECTS = 2
BACKGROUND_NOISE = 10.0          # std of the background's pixel noise
IMAGE_NOISE = 6.0                # std of the noise added to the whole image


def class_names(num_classes: int) -> List[str]:
    """Names of classes 1..num_classes (index 0 of the list is label 1, the background)."""
    if not 2 <= num_classes <= MAX_CLASSES:
        raise ValueError(f'--num-classes must be in 2..{MAX_CLASSES}, got {num_classes}')
    return ['background'] + list(TEXTURES[:num_classes - 1])


def class_palette(num_classes: int) -> List[List[int]]:
    """A fixed, well separated color per class for overlays."""
    base = [[128, 128, 128], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200],
            [245, 130, 48], [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]]
    return base[:num_classes]


def prepare_out_dir(out_dir: str, owned: Sequence[str], overwrite: bool) -> None:
    """Refuse a non-empty ``out_dir`` unless ``overwrite``, which first removes what an earlier
    run wrote there (``owned``: the entries this maker writes). Anything else in the folder is
    never removed: the folder is refused, naming it (a mistyped path such as ``data``)."""
    if osp.exists(out_dir) and not osp.isdir(out_dir):
        raise FileExistsError(f'{out_dir} is a file, not a folder')
    entries = sorted(os.listdir(out_dir)) if osp.isdir(out_dir) else []
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f'{out_dir} is not empty ({", ".join(entries[:5])}{" ..." if len(entries) > 5 else ""}'
            f'): writing into it would mix two datasets; pass --overwrite to replace it, or '
            f'choose an empty folder')
    foreign = [e for e in entries if e not in owned]
    if foreign:
        raise FileExistsError(
            f'{out_dir} holds {", ".join(foreign[:5])}{" ..." if len(foreign) > 5 else ""}, which '
            f'this tool does not write: --overwrite replaces only a dataset it wrote '
            f'({", ".join(owned)}); remove those yourself or choose another folder')
    for e in entries:
        path = osp.join(out_dir, e)
        shutil.rmtree(path) if osp.isdir(path) and not osp.islink(path) else os.remove(path)


# --------------------------------------------------------------------------- drawing
def _texture(kind: str, yy: np.ndarray, xx: np.ndarray, period: float, angle: float,
             center: Tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """A binary texture pattern (float 0/1) on the pixel grid."""
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    if kind == 'grid':  # thin lines along both axes
        width = 0.3 * period
        return ((np.mod(u, period) < width) | (np.mod(v, period) < width)).astype(np.float32)
    if kind == 'rings':  # concentric circles around the object's center
        dist = np.sqrt((yy - center[0]) ** 2 + (xx - center[1]) ** 2)
        return (np.sin(2 * np.pi * dist / period) > 0).astype(np.float32)
    if kind == 'stripes':
        return (np.sin(2 * np.pi * u / period) > 0).astype(np.float32)
    if kind == 'checker':
        return ((np.floor(u / period) + np.floor(v / period)) % 2).astype(np.float32)
    if kind == 'dots':
        du = np.mod(u, period) - period / 2
        dv = np.mod(v, period) - period / 2
        return (du ** 2 + dv ** 2 < (0.32 * period) ** 2).astype(np.float32)
    raise ValueError(kind)


def _shape_mask(kind: str, yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float,
                angle: float) -> np.ndarray:
    """Boolean mask of a disc, a rotated box or a rotated triangle of radius ``r``."""
    dy, dx = yy - cy, xx - cx
    if kind == 'disc':
        return dy ** 2 + dx ** 2 <= r ** 2
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if kind == 'box':
        half = r * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if kind == 'triangle':
        # Equilateral triangle with circumradius 1.2 r: inside all three half-planes.
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):
            a = 2 * np.pi * k / 3
            inside &= (u * np.cos(a) + v * np.sin(a)) <= 0.6 * r
        return inside
    raise ValueError(kind)


def _erode(mask: np.ndarray) -> np.ndarray:
    """4-neighbour binary erosion (the border of the image counts as outside)."""
    out = mask.copy()
    out[1:] &= mask[:-1]
    out[:-1] &= mask[1:]
    out[:, 1:] &= mask[:, :-1]
    out[:, :-1] &= mask[:, 1:]
    out[0, :] = out[-1, :] = out[:, 0] = out[:, -1] = False
    return out & mask


def _contrasting_colors(rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    while True:
        c1, c2 = rng.uniform(0, 255, size=(2, 3))
        if np.abs(c1 - c2).sum() > 150:
            return c1, c2


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth random color field plus pixel noise."""
    coarse = rng.uniform(40, 215, size=(4, 4, 3)).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC),
                       dtype=np.float32)
    return field + rng.normal(0, BACKGROUND_NOISE, size=(size, size, 3))


def make_sample(rng: np.random.Generator, size: int,
                num_classes: int) -> Tuple[np.ndarray, np.ndarray]:
    """One (H, W, 3) uint8 image and its (H, W) uint8 label map (0 = unlabeled)."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    img = _background(rng, size)
    label = np.ones((size, size), np.uint8)  # class 1: background
    ignore = np.zeros((size, size), bool)
    num_objects = int(rng.integers(1, MAX_OBJECTS + 1))
    for _ in range(num_objects):
        cls = int(rng.integers(2, num_classes + 1))
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        r = rng.uniform(*RADIUS_RANGE) * size
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, size=2)
        mask = _shape_mask(shape, yy, xx, cy, cx, r, rng.uniform(0, 2 * np.pi))
        if mask.sum() < 16:
            continue
        period = rng.uniform(*PERIOD_RANGE) * size
        pattern = _texture(TEXTURES[cls - 2], yy, xx, period, rng.uniform(*ANGLE_RANGE),
                           center=(cy, cx))
        c1, c2 = _contrasting_colors(rng)
        fill = pattern[..., None] * c1 + (1 - pattern[..., None]) * c2
        img[mask] = fill[mask]
        label[mask] = cls
        ignore[mask] = False
        ignore |= mask & ~_erode(mask)
    label[ignore] = 0
    img += rng.normal(0, IMAGE_NOISE, size=img.shape)
    return np.clip(img, 0, 255).astype(np.uint8), label


def write_split(out_dir: str, split: str, num: int, size: int, num_classes: int,
                seed: int) -> None:
    img_dir = osp.join(out_dir, 'images', split)
    ann_dir = osp.join(out_dir, 'annotations', split)
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(ann_dir, exist_ok=True)
    for i in range(num):
        rng = np.random.default_rng([seed, SPLITS[split], i])
        img, label = make_sample(rng, size, num_classes)
        stem = f'synth_{split}_{i:05d}'
        Image.fromarray(img).save(osp.join(img_dir, stem + '.jpg'), quality=92)
        Image.fromarray(label).save(osp.join(ann_dir, stem + '.png'))


def _already_written(out_dir: str, meta: dict) -> bool:
    """Whether ``out_dir`` holds exactly the dataset these arguments write (the output is
    deterministic per seed): its ``classes.json`` says so and every split has its files."""
    try:
        with open(osp.join(out_dir, 'classes.json')) as f:
            if json.load(f) != json.loads(json.dumps(meta)):
                return False
    except (OSError, ValueError):
        return False
    for split, n in (('training', meta['num_train']), ('validation', meta['num_val'])):
        for sub in ('images', 'annotations'):
            folder = osp.join(out_dir, sub, split)
            if not osp.isdir(folder) or len(os.listdir(folder)) != n:
                return False
    return True


def make_dataset(out_dir: str, num_train: int = 500, num_val: int = 50, size: int = 128,
                 num_classes: int = 4, seed: int = 0,
                 overwrite: bool = False) -> Dict[str, object]:
    """Write the dataset and return its metainfo (``classes``, ``palette``).

    ``out_dir`` must be empty or absent, or hold exactly this dataset already (then nothing is
    written and the metainfo has ``already_there=True``); ``overwrite=True`` first removes a
    dataset this function wrote there (see :func:`prepare_out_dir`)."""
    names = class_names(num_classes)
    if size < 32:
        raise ValueError(f'--size must be at least 32, got {size}')
    if num_train < 0 or num_val < 0:
        raise ValueError(f'--num-train and --num-val must not be negative, got {num_train} and '
                         f'{num_val}')
    meta = dict(classes=names, palette=class_palette(num_classes), num_train=num_train,
                num_val=num_val, size=size, seed=seed)
    if not overwrite and _already_written(out_dir, meta):
        return dict(meta, already_there=True)
    prepare_out_dir(out_dir, ('images', 'annotations', 'classes.json'), overwrite)
    write_split(out_dir, 'training', num_train, size, num_classes, seed)
    write_split(out_dir, 'validation', num_val, size, num_classes, seed)
    with open(osp.join(out_dir, 'classes.json'), 'w') as f:
        json.dump(meta, f, indent=1)
    return meta


def parse_args(argv: Sequence[str] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('out_dir', help='output folder (e.g. data/synthetic_ade)')
    parser.add_argument('--num-train', type=int, default=500)
    parser.add_argument('--num-val', type=int, default=50)
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--num-classes', type=int, default=4,
                        help=f'classes including the background, 2..{MAX_CLASSES}')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--overwrite', action='store_true',
                        help='replace the dataset an earlier run wrote into OUT_DIR')
    return parser.parse_args(argv)


def main(argv: Sequence[str] = None) -> None:
    args = parse_args(argv)
    try:
        meta = make_dataset(args.out_dir, args.num_train, args.num_val, args.size,
                            args.num_classes, args.seed, overwrite=args.overwrite)
    except (ValueError, FileExistsError) as e:
        sys.exit(f'error: {e}')
    if meta.get('already_there'):
        print(f'{args.out_dir} already holds this dataset (same arguments and seed): nothing '
              f'written')
        return
    print(f'wrote {args.num_train} training and {args.num_val} validation images '
          f'({args.size}x{args.size}, classes {meta["classes"]}) to {args.out_dir}')


if __name__ == '__main__':
    main()
