"""Up-front checks of the folders and annotation files a dataset config points at."""
from __future__ import annotations

import os
import os.path as osp
from typing import List


def _dataset_cfgs(cfg):
    """Yield the leaf dataset configs of a (possibly wrapped) dataset config."""
    if not isinstance(cfg, dict):
        return
    if isinstance(cfg.get('datasets'), (list, tuple)):
        for sub in cfg['datasets']:
            yield from _dataset_cfgs(sub)
    elif isinstance(cfg.get('dataset'), dict):
        yield from _dataset_cfgs(cfg['dataset'])
    else:
        yield cfg


def check_dataset_paths(dataset_cfg, where: str) -> List[str]:
    """Problems with the folders and annotation files a dataset config points at: missing or
    empty image / label folders, missing annotation files. ``where`` prefixes each message."""
    problems = []
    for ds in _dataset_cfgs(dataset_cfg):
        root = ds.get('data_root') or ''
        if root and not osp.isdir(root):
            problems.append(f'{where}: data_root {root} does not exist')
            continue
        prefix = ds.get('data_prefix') or {}
        for key, sub in (prefix.items() if isinstance(prefix, dict) else []):
            if not sub or not isinstance(sub, str) or '://' in sub:
                continue
            folder = osp.join(root, sub)
            if not osp.isdir(folder):
                problems.append(f'{where}: data_prefix.{key} folder {folder} does not exist')
            elif not any(os.scandir(folder)):
                problems.append(f'{where}: data_prefix.{key} folder {folder} is empty')
        ann = ds.get('ann_file')
        if ann and isinstance(ann, str) and '://' not in ann:
            path = osp.join(root, ann)
            if not osp.isfile(path):
                problems.append(f'{where}: ann_file {path} does not exist')
    return problems
