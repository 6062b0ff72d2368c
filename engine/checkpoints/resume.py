"""Which checkpoint ``--resume`` continues from: the newest complete one of a work dir."""
from __future__ import annotations

import glob
import os.path as osp
import re
from typing import Optional

from .formats import is_complete_checkpoint


def find_resumable_checkpoint(work_dir: str) -> Optional[str]:
    """The newest complete checkpoint of ``work_dir``: the one ``last_checkpoint`` names when
    it is complete, else the newest complete ``iter_*.pth`` / ``epoch_*.pth``."""
    marker = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(marker):
        with open(marker) as f:
            last = f.read().strip()
        if last and osp.exists(last) and is_complete_checkpoint(last):
            return last
    candidates = []
    for pattern in ('iter_*.pth', 'epoch_*.pth'):
        for path in glob.glob(osp.join(work_dir, pattern)):
            m = re.search(r'_(\d+)\.pth$', path)
            if m:
                candidates.append((int(m.group(1)), path))
    for _, path in sorted(candidates, reverse=True):
        if is_complete_checkpoint(path):
            return path
    return None
