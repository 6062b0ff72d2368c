#!/usr/bin/env python
"""Train a segmentor (an ``mmseg`` config) or a detector (an ``mmdet`` config) with MMEngine.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
                          [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

The toolbox is chosen by the config's ``default_scope``. Checkpoints are read with
``torch.load(weights_only=True)`` and written so that it accepts them
(``backbones/safe_load.py``). ``--resume`` alone resumes from the newest checkpoint of the work
directory (its ``last_checkpoint`` file); ``--resume PATH`` from PATH.
"""
import argparse
import logging
import os
import os.path as osp
import sys
from importlib import import_module

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

# Only the light imports here: a mistyped path is reported before torch and the toolboxes load.
from mmengine.config import Config, DictAction  # noqa: E402

SCOPES = ('mmseg', 'mmdet')
SAFE_HOOK = 'SafeCheckpointStateHook'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Train a segmentor or detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume', nargs='?', const='auto', default=None, metavar='PATH',
        help='resume from PATH; without PATH, from the newest checkpoint in the work dir')
    parser.add_argument('--amp', action='store_true',
                        help='enable automatic mixed precision training')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs (xxx=yyy); lists as '
             'key="[a,b]" or key=a,b, nested as key="[(a,b),(c,d)]", quoted, no spaces')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    if args.resume not in (None, 'auto') and '://' not in args.resume \
            and not osp.isfile(args.resume):
        parser.error(f'checkpoint to resume from not found: {args.resume}')
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return parser, args


def register_toolbox(cfg, config_path, parser):
    """Register the modules of the config's toolbox (``default_scope``); returns the scope."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        parser.error(f'{config_path}: default_scope must be one of {SCOPES}, got {scope!r}')
    import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    return scope


def enable_amp(cfg, config_path, parser):
    wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
    if wrapper == 'AmpOptimWrapper':
        from mmengine.logging import print_log
        print_log('AMP training is already enabled in the config.', logger='current',
                  level=logging.WARNING)
    elif wrapper == 'OptimWrapper':
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    else:
        parser.error(f'--amp needs optim_wrapper.type OptimWrapper or AmpOptimWrapper in '
                     f'{config_path}, got {wrapper}')


def add_safe_checkpoint_hook(cfg):
    """Make every checkpoint this run saves loadable with ``weights_only=True``."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and h.get('type') == SAFE_HOOK for h in hooks):
        hooks.append(dict(type=SAFE_HOOK))
    cfg.custom_hooks = hooks


def main(argv=None):
    parser, args = parse_args(argv)
    from mmengine.runner import Runner

    from backbones.safe_load import patch_mmengine_checkpoint_loading
    patch_mmengine_checkpoint_loading()

    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_toolbox(cfg, args.config, parser)

    # work_dir: command line > config > ./work_dirs/<config name>
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])

    if args.amp:
        enable_amp(cfg, args.config, parser)

    if args.resume == 'auto':  # Runner finds the newest checkpoint through last_checkpoint
        cfg.resume = True
        cfg.load_from = None
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume

    add_safe_checkpoint_hook(cfg)

    if 'runner_type' in cfg:
        runner = import_module(f'{scope}.registry').RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    runner.train()


if __name__ == '__main__':
    main()
