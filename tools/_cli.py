"""What tools/train.py and tools/test.py share: loading a config for one of the toolboxes."""
import os.path as osp
from importlib import import_module

from mmengine.config import Config

SCOPES = ('mmseg', 'mmdet')


def register_toolbox(cfg, config_path, parser):
    """Register the modules of the config's toolbox (``default_scope``); returns the scope."""
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        parser.error(f'{config_path}: default_scope must be one of {SCOPES}, got {scope!r}')
    import_module(f'{scope}.utils').register_all_modules(init_default_scope=False)
    return scope


def load_config(args, parser):
    """Safe checkpoint loading on, the config with ``--cfg-options`` and the launcher applied,
    its toolbox registered and ``work_dir`` resolved (command line > config >
    ./work_dirs/<config name>). Returns (cfg, scope)."""
    import engine  # noqa: F401  (registers the strategies, hooks and the atomic_local backend)
    from engine.checkpoints.safe_load import patch_mmengine_checkpoint_loading
    patch_mmengine_checkpoint_loading()
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    scope = register_toolbox(cfg, args.config, parser)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg, scope


def build_runner(cfg, scope):
    """The config's ``runner_type`` (e.g. FlexibleRunner) or mmengine's Runner."""
    if 'runner_type' in cfg:
        return import_module(f'{scope}.registry').RUNNERS.build(cfg)
    from mmengine.runner import Runner
    return Runner.from_cfg(cfg)
