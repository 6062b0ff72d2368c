#!/usr/bin/env python
"""Train a segmentor (an ``mmseg`` config) or a detector (an ``mmdet`` config) with MMEngine.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
                          [--cfg-options KEY=VALUE ...] [--launcher none|pytorch|slurm|mpi]

The toolbox is chosen by the config's ``default_scope``. Checkpoints are read with
``torch.load(weights_only=True)`` and written so that it accepts them
(``engine/checkpoints/safe_load.py``). ``--resume`` alone resumes from the newest checkpoint of the work
directory (the one ``last_checkpoint`` names if it is complete, else the newest complete
``iter_*``/``epoch_*``; so does ``resume = True`` without ``load_from`` in a config);
``--resume PATH`` from PATH. Checkpoints are written atomically (``AtomicLocalBackend``) and a
non-finite loss stops the run naming the last good checkpoint (``NonFiniteLossHook``; set
``check_finite_loss = False`` in a config to turn it off). Missing or empty dataset folders
and more processes than GPUs are reported before anything is built.
"""
import argparse
import logging
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

# Only the light imports here: a mistyped path is reported before torch and the toolboxes load.
from mmengine.config import Config, DictAction  # noqa: E402

from tools._cli import SCOPES, build_runner, load_config, register_toolbox  # noqa: E402,F401
from tools._threads import add_threads_argument, prepare_process  # noqa: E402

STRATEGY_DIR = osp.join(ROOT, 'configs', '_base_', 'strategies')
STRATEGIES = sorted(osp.splitext(f)[0] for f in os.listdir(STRATEGY_DIR) if f.endswith('.py')) \
    if osp.isdir(STRATEGY_DIR) else []
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
    parser.add_argument(
        '--strategy', choices=STRATEGIES, default=None,
        help='distributed engine, replacing the config\'s runner_type/strategy with '
             'configs/_base_/strategies/<name>.py (ddp: the plain Runner)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    add_threads_argument(parser)
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


def apply_strategy(cfg, name):
    """Replace (not merge: keys of another engine must not leak) the config's engine."""
    piece = Config.fromfile(osp.join(STRATEGY_DIR, f'{name}.py'))
    cfg.runner_type = piece.runner_type
    if piece.get('strategy') is None:
        cfg.pop('strategy', None)
    else:
        cfg.strategy = piece.strategy


def add_reliability(cfg):
    """Atomic checkpoint writes and the non-finite loss guard, unless the config opts out
    (``check_finite_loss = False``; a CheckpointHook with its own ``backend_args``)."""
    ckpt_hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if isinstance(ckpt_hook, dict) and not ckpt_hook.get('backend_args'):
        ckpt_hook['backend_args'] = dict(backend='atomic_local')
    hooks = list(cfg.get('custom_hooks') or [])
    if cfg.get('check_finite_loss', True) and not any(
            isinstance(h, dict) and h.get('type') == 'NonFiniteLossHook' for h in hooks):
        hooks.append(dict(type='NonFiniteLossHook'))
    if not any(isinstance(h, dict) and h.get('type') == 'ResumeCheckHook' for h in hooks):
        hooks.append(dict(type='ResumeCheckHook'))
    cfg.custom_hooks = hooks


def check_data(cfg, config_path, parser):
    """Missing or empty dataset folders are reported before anything is built."""
    from engine.dataset_checks import check_dataset_paths
    problems = []
    loaders = ['train_dataloader'] + (['val_dataloader'] if cfg.get('val_cfg') else [])
    for name in loaders:
        if cfg.get(name):
            problems += check_dataset_paths(cfg[name].get('dataset'), f'{config_path}: {name}')
    if problems:
        parser.error('\n'.join(problems))


def _pretrained_paths(node, where):
    """(config key, path) of every local ``init_cfg=dict(type='Pretrained', checkpoint=...)``."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'init_cfg':
                for i, init in enumerate(value if isinstance(value, (list, tuple)) else [value]):
                    path = init.get('checkpoint') if isinstance(init, dict) else None
                    if isinstance(init, dict) and init.get('type') == 'Pretrained' and \
                            isinstance(path, str) and ':' not in path.split('/')[0]:
                        sub = f'[{i}]' if isinstance(value, (list, tuple)) else ''
                        yield f'{where}.init_cfg{sub}.checkpoint', path
            else:
                yield from _pretrained_paths(value, f'{where}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _pretrained_paths(value, f'{where}[{i}]')


def check_checkpoints(cfg, parser):
    """The weights a run reads are checked before anything is built (a 6B runner takes
    minutes): every ``init_cfg`` checkpoint and ``load_from`` must exist and look whole
    (nothing unpickled, see ``weights_file_problem``), and a file to resume from must be a
    training checkpoint (``meta``, ``state_dict``), not backbone weights."""
    from engine.checkpoints.formats import weights_file_problem
    problems = []
    for key, path in _pretrained_paths(cfg.get('model'), 'model'):
        problem = weights_file_problem(osp.expanduser(path))
        if problem:
            problems.append(f'{key}: {problem}')
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and '://' not in load_from:
        problem = weights_file_problem(osp.expanduser(load_from))
        if problem:
            problems.append(f'{"--resume" if cfg.get("resume") else "load_from"}: {problem}')
        elif cfg.get('resume') and osp.isfile(load_from):
            problem = _not_a_training_checkpoint(load_from)
            if problem:
                problems.append(f'--resume: {problem}')
    if problems:
        parser.error('\n'.join(problems))


def _not_a_training_checkpoint(path):
    """Why ``path`` cannot be resumed from (backbone weights, an unreadable file, a refused
    pickle); only its pickle is read (``mmap``), not its tensor data."""
    from backbones.checkpoint import CheckpointError
    from engine.checkpoints.safe_load import load_from_local_weights_only
    if path.endswith(('.safetensors', '.json')):
        return (f'{path} holds weights only, not a training checkpoint; start from them with '
                f'load_from (or the backbone\'s init_cfg) and no --resume')
    try:
        ckpt = load_from_local_weights_only(path, map_location='cpu', peek=True)
    except CheckpointError as e:
        return str(e)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get('meta'), dict) \
            or 'state_dict' not in ckpt:
        keys = list(ckpt)[:5] if isinstance(ckpt, dict) else type(ckpt).__name__
        return (f'{path} is not a training checkpoint (no meta / state_dict; {keys}): backbone '
                f'or model weights cannot be resumed from; start from them with '
                f'load_from={path} and no --resume')
    return None


def check_devices(cfg, args, parser):
    """Asking for more GPUs than this node has fails here, with the numbers. Without any CUDA
    device (the CPU, for tests and debugging) processes talk over gloo instead of nccl."""
    import torch
    strategy = (cfg.get('strategy') or {}).get('type') \
        if cfg.get('runner_type') == 'FlexibleRunner' else None
    if strategy == 'FSDPStrategy' and not torch.cuda.is_available():
        parser.error('the FSDPStrategy of this config (FSDP1, configs/_base_/strategies/'
                     'fsdp1_full_shard.py) needs CUDA GPUs: torch refuses FSDP1 without an '
                     'accelerator. Without GPUs use --strategy fsdp2_full_shard.')
    if args.launcher == 'none':
        return
    dist_cfg = cfg.setdefault('env_cfg', {}).setdefault('dist_cfg', {})
    backend = dist_cfg.get('backend', 'nccl')
    local_rank = int(os.environ.get('LOCAL_RANK', 0))
    n_gpus = torch.cuda.device_count()
    if n_gpus == 0:
        setup_cpu_distributed(cfg, args.launcher, backend)
    elif backend == 'nccl' and local_rank >= n_gpus:
        parser.error(f'process with LOCAL_RANK={local_rank} needs a GPU, but this node has '
                     f'{n_gpus}; launch at most {n_gpus} processes per node')


def setup_cpu_distributed(cfg, launcher, backend):
    """Distributed training without CUDA (gloo). MMEngine's launcher calls
    ``torch.cuda.set_device`` and its Runner gives DDP ``device_ids``, both of which fail on the
    CPU: the process group is started here (the Runner then finds it) and the model is wrapped
    by ``CPUDistributedDataParallel``. FlexibleRunner strategies start their own group."""
    from mmengine.logging import print_log
    if backend == 'nccl':
        print_log('no CUDA device: using the gloo backend instead of nccl', logger='current',
                  level=logging.WARNING)
        cfg.env_cfg.dist_cfg.backend = backend = 'gloo'
    if cfg.get('runner_type', 'Runner') == 'FlexibleRunner':
        return
    from engine.model_wrappers import CPUDistributedDataParallel  # noqa: F401 (registers it)
    from engine.strategies import init_dist_any_device
    kwargs = {k: v for k, v in cfg.env_cfg.dist_cfg.items() if k != 'backend'}
    init_dist_any_device(launcher, backend, who='tools/train.py', **kwargs)
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    if wrapper.get('type', 'MMDistributedDataParallel') == 'MMDistributedDataParallel':
        wrapper['type'] = 'CPUDistributedDataParallel'
        # the Runner's own defaults when it builds MMDistributedDataParallel itself
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        cfg.model_wrapper_cfg = wrapper


def resolve_auto_resume(cfg, parser=None):
    """``--resume`` without a path: the newest *complete* checkpoint of the work dir (a
    checkpoint cut short by a kill is skipped, and the temporary files of killed atomic writes
    are removed)."""
    from mmengine.logging import print_log

    from engine.checkpoints import find_resumable_checkpoint, remove_partial_writes
    removed = remove_partial_writes(cfg.work_dir)
    if removed:
        print_log(f'removed partial checkpoint writes of a killed run: {removed}',
                  logger='current', level=logging.WARNING)
    try:
        path = find_resumable_checkpoint(cfg.work_dir)
    except FileNotFoundError as e:
        if parser is None:
            raise
        parser.error(str(e))
    if path is None:
        print_log(f'--resume: no complete checkpoint in {cfg.work_dir}; training from the start',
                  logger='current', level=logging.WARNING)
        cfg.resume = False
    else:
        cfg.resume = True
        cfg.load_from = path


def main(argv=None):
    parser, args = parse_args(argv)
    prepare_process(args.threads)  # CPU threads, upstream noise off (tools/_threads.py)
    cfg, scope = load_config(args, parser)

    if args.amp:
        import torch
        if not torch.cuda.is_available():  # MMEngine's AmpOptimWrapper asserts a GPU
            parser.error('--amp (AmpOptimWrapper: mixed precision with loss scaling) is for '
                         'GPUs; there is no CUDA device here: on the CPU train without --amp')
        enable_amp(cfg, args.config, parser)
    if args.strategy:
        apply_strategy(cfg, args.strategy)

    check_data(cfg, args.config, parser)
    check_devices(cfg, args, parser)
    if args.resume == 'auto' or (args.resume is None and cfg.get('resume') is True
                                 and not cfg.get('load_from')):
        resolve_auto_resume(cfg, parser)
    elif args.resume is not None:
        cfg.resume = True
        cfg.load_from = args.resume
    check_checkpoints(cfg, parser)

    add_safe_checkpoint_hook(cfg)
    add_reliability(cfg)

    runner = build_runner(cfg, scope)
    runner.train()


if __name__ == '__main__':
    main()
