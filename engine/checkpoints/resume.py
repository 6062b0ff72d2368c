"""Which checkpoint ``--resume`` continues from: the newest complete one of a work dir."""
from __future__ import annotations

import glob
import logging
import os.path as osp
import re
from typing import Optional

from .formats import is_complete_checkpoint


def _warn(msg: str) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=logging.WARNING)


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint of ``work_dir``: the one ``last_checkpoint`` names when
    it is complete, else the newest complete ``iter_*.pth`` / ``epoch_*.pth``. Every
    checkpoint passed over is named in a warning, with the reason.

    ``last_checkpoint`` holds an absolute path: in a work dir copied or moved elsewhere it
    names the original folder's file. The file of the same name inside ``work_dir`` is used
    instead; when there is none, this raises (resuming another run's checkpoint silently
    would continue the wrong run).
    """
    marker = osp.join(work_dir, 'last_checkpoint')
    skipped = set()
    if osp.isfile(marker):
        with open(marker) as f:
            last = f.read().strip()
        if last and osp.realpath(osp.dirname(osp.abspath(last))) != osp.realpath(work_dir):
            local = osp.join(work_dir, osp.basename(last))
            if osp.exists(local):
                _warn(f'{marker} names {last}, outside this work dir (a copied or moved work '
                      f'dir?): resuming from {local} instead')
                last = local
            else:
                raise FileNotFoundError(
                    f'{marker} names {last}, which is outside the work dir {work_dir} (a copied '
                    f'or moved work dir?), and {work_dir} has no {osp.basename(last)}. Pass '
                    f'--resume {last} to continue from it, or fix {marker}.')
        if last and not osp.exists(last):
            _warn(f'{marker} names {last}, which does not exist: looking for the newest '
                  f'complete checkpoint instead')
        elif last and not is_complete_checkpoint(last):
            skipped.add(osp.abspath(last))
            _warn(f'skipping {last} (named in {marker}): incomplete or corrupt (a crash '
                  f'while it was written?)')
        elif last:
            return last
    candidates = []
    for pattern in ('iter_*.pth', 'epoch_*.pth'):
        for path in glob.glob(osp.join(work_dir, pattern)):
            m = re.search(r'_(\d+)\.pth$', path)
            if m:
                candidates.append((int(m.group(1)), path))
    for _, path in sorted(candidates, reverse=True):
        if osp.abspath(path) in skipped:
            continue
        if is_complete_checkpoint(path):
            return path
        _warn(f'skipping {path}: incomplete or corrupt (a crash while it was written?)')
    return None
