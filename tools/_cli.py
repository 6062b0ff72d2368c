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


_MISSING = object()


def _lookup(cfg, key: str):
    node = cfg
    for part in key.split('.'):
        if (isinstance(node, dict) or hasattr(node, 'get') and hasattr(node, 'keys')) \
                and part in node:
            node = node[part]
        elif isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def check_cfg_options(cfg, options: dict, config_path: str, parser) -> None:
    """A ``--cfg-options`` value that cannot be what the config has there (``abc`` for an
    int) is an error naming the key, before anything is built (the runner would fail later
    with ``invalid literal for int()`` naming nothing)."""
    for key, value in options.items():
        old = _lookup(cfg, key)
        if old is _MISSING or old is None or not isinstance(value, str):
            continue
        for kind in (bool, int, float):
            if type(old) is kind:
                try:
                    if kind is bool:
                        ok = value.lower() in ('true', 'false')
                    else:
                        kind(value)
                        ok = True
                except ValueError:
                    ok = False
                if not ok:
                    parser.error(f'--cfg-options {key}={value}: {key} is {kind.__name__} in '
                                 f'{config_path} ({old!r}); {value!r} is not one')


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
        check_cfg_options(cfg, args.cfg_options, args.config, parser)
        try:
            cfg.merge_from_dict(args.cfg_options)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            keys = ', '.join(args.cfg_options)
            parser.error(f'--cfg-options ({keys}) do not fit {args.config}: {e}')
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
