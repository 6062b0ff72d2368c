#!/usr/bin/env python
"""Print a config as MMEngine resolves it (``_base_`` merged, ``--cfg-options`` applied).

    python tools/misc/print_config.py CONFIG [--cfg-options k=v ...] [--save-path OUT.py]

As mmseg's ``tools/misc/print_config.py``. ``custom_imports`` are not imported, so it works
without the toolboxes' modules; ``--save-path`` writes the resolved config (``.py``, ``.json``
or ``.yaml``) that ``tools/train.py`` can run as it is.
"""
from __future__ import annotations

import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


import tools._threads  # noqa: E402,F401 (before mmengine: its pkg_resources warning off)


def parse_args(argv=None):
    from mmengine.config import DictAction
    p = argparse.ArgumentParser(description='Print the resolved config')
    p.add_argument('config', help='config file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction,
                   help='override settings, as key=value pairs (as in tools/train.py)')
    p.add_argument('--save-path', default=None,
                   help='also write the resolved config there (.py, .json or .yaml)')
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    if osp.isdir(args.config):
        sys.exit(f'error: {args.config} is a directory, not a config file')
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    from mmengine.config import Config
    cfg = Config.fromfile(args.config, import_custom_modules=False)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    text = cfg.pretty_text
    print(f'Config ({args.config}):\n{text}')
    if args.save_path:
        if osp.splitext(args.save_path)[1] not in ('.py', '.json', '.yaml', '.yml'):
            sys.exit(f'error: --save-path must end in .py, .json or .yaml: {args.save_path}')
        cfg.dump(args.save_path)
        print(f'resolved config written to {args.save_path}')
    return text


if __name__ == '__main__':
    main()
