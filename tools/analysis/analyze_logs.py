#!/usr/bin/env python
"""Curves of a training run (loss, learning rate, mIoU, ...) from MMEngine's scalar log, as a PNG.

    python tools/analysis/analyze_logs.py WORK_DIR_OR_SCALARS_JSON [...] [--keys loss lr mIoU]
                                          [--out curves.png] [--title T]

Reads ``vis_data/scalars.json`` (one JSON object per line, written by MMEngine's
``LocalVisBackend``: training lines with ``loss``, ``lr``, ... and evaluation lines with
``mIoU``, ``aAcc``, ... or ``coco/bbox_mAP``, all with their ``step``). A work dir stands for its
newest run (``WORK_DIR/<timestamp>/vis_data/scalars.json``). One panel per key, one line per
run; keys no run logged are listed and skipped. As mmseg's ``analyze_logs.py``, but for
MMEngine's log format.
"""
from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import sys
from typing import Dict, List, Optional, Sequence, Tuple

DEFAULT_KEYS = ('loss', 'lr', 'mIoU')


def find_scalars(path: str) -> str:
    """The ``scalars.json`` of ``path``: the file itself, or the newest run of a work dir."""
    if osp.isfile(path):
        return path
    if osp.isdir(path):
        for pattern in ('scalars.json', 'vis_data/scalars.json', '*/vis_data/scalars.json'):
            found = sorted(glob.glob(osp.join(path, pattern)))
            if found:
                return found[-1]  # timestamped run folders sort by time
        raise FileNotFoundError(f'{path} is a directory without vis_data/scalars.json (a work '
                                f'dir of tools/train.py has WORK_DIR/<timestamp>/vis_data/)')
    raise FileNotFoundError(f'log not found: {path}')


def read_scalars(path: str) -> Dict[str, List[Tuple[int, float]]]:
    """``{key: [(step, value), ...]}`` of one scalars.json (non-numeric values skipped)."""
    series: Dict[str, List[Tuple[int, float]]] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f'{path}:{n}: not a JSON line ({e})') from None
            step = record.get('step', record.get('iter', n))
            for key, value in record.items():
                if key in ('step', 'iter', 'epoch') or not isinstance(value, (int, float)):
                    continue
                series.setdefault(key, []).append((int(step), float(value)))
    return series


def plot(runs: Sequence[Tuple[str, Dict[str, List[Tuple[int, float]]]]], keys: Sequence[str],
         out: str, title: Optional[str] = None) -> List[str]:
    """Write one panel per key found in any run to ``out``; returns the keys drawn."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    drawn = [k for k in keys if any(k in series for _, series in runs)]
    if not drawn:
        raise ValueError(f'none of the keys {list(keys)} is in the logs; they have '
                         f'{sorted({k for _, s in runs for k in s})}')
    fig, axes = plt.subplots(len(drawn), 1, figsize=(7, 2.6 * len(drawn)), squeeze=False)
    for ax, key in zip(axes[:, 0], drawn):
        for label, series in runs:
            if key in series:
                steps, values = zip(*series[key])
                ax.plot(steps, values, marker='o' if len(steps) < 20 else None, label=label)
        ax.set_ylabel(key)
        ax.set_xlabel('iteration')
        ax.grid(alpha=0.3)
        if len(runs) > 1:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return drawn


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Plot loss / lr / metric curves of training runs '
                                            '(MMEngine vis_data/scalars.json) to a PNG')
    p.add_argument('logs', nargs='+', metavar='LOG',
                   help='work dir (its newest run) or scalars.json; several are overlaid')
    p.add_argument('--keys', nargs='+', default=list(DEFAULT_KEYS),
                   help=f'scalars to plot, one panel each (default: {" ".join(DEFAULT_KEYS)})')
    p.add_argument('--out', default='curves.png', help='PNG to write (default curves.png)')
    p.add_argument('--title', default=None, help='figure title')
    return p.parse_args(argv)


def main(argv=None) -> List[str]:
    args = parse_args(argv)
    runs = []
    for log in args.logs:
        try:
            path = find_scalars(log)
            runs.append((osp.basename(osp.dirname(osp.dirname(path))) or log, read_scalars(path)))
        except (FileNotFoundError, ValueError) as e:
            sys.exit(f'error: {e}')
    try:
        drawn = plot(runs, args.keys, args.out, args.title)
    except ValueError as e:
        sys.exit(f'error: {e}')
    missing = [k for k in args.keys if k not in drawn]
    print(f'{", ".join(drawn)} curves of {len(runs)} run(s) written to {args.out}'
          + (f' (not logged: {", ".join(missing)})' if missing else ''))
    return drawn


if __name__ == '__main__':
    main()
