#!/usr/bin/env python
"""Evaluate a checkpoint on the test set of a segmentation (``mmseg``) or detection (``mmdet``)
config with MMEngine's Runner.

    python tools/test.py CONFIG CKPT [--work-dir DIR] [--out OUT] [--show] [--show-dir DIR]
                         [--wait-time S] [--tta] [--cfg-options KEY=VALUE ...] [--launcher ...]

The toolbox is chosen by the config's ``default_scope``; its evaluator prints the results
(mmseg's ``IoUMetric``: the per-class IoU/Acc table and mIoU; mmdet's ``CocoMetric``: bbox/segm
AP). CKPT is read with ``torch.load(weights_only=True)`` (``engine/checkpoints/safe_load.py``).
"""
import argparse
import os
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

# Only the light imports here: a mistyped path is reported before torch and the toolboxes load.
from mmengine.config import DictAction  # noqa: E402

from tools._cli import SCOPES, build_runner, load_config, register_toolbox  # noqa: E402,F401
from tools._threads import add_threads_argument, prepare_process  # noqa: E402

VIS_HOOKS = {'mmseg': 'SegVisualizationHook', 'mmdet': 'DetVisualizationHook'}
VISUALIZERS = {'mmseg': 'SegLocalVisualizer', 'mmdet': 'DetLocalVisualizer'}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description='Test (and evaluate) a segmentor or detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir',
                        help='the directory to save the file containing evaluation metrics')
    parser.add_argument(
        '--out', type=str,
        help='segmentation: directory to save the predicted maps in for offline evaluation; '
             'detection: .pkl file to dump the predictions to')
    parser.add_argument('--show', action='store_true', help='show prediction results')
    parser.add_argument('--show-dir', help='directory where painted images will be saved')
    parser.add_argument('--wait-time', type=float, default=2,
                        help='the interval of show (s)')
    parser.add_argument('--tta', action='store_true',
                        help='test-time augmentation with the config\'s tta_model and '
                             'tta_pipeline')
    parser.add_argument(
        '--cfg-options', nargs='+', action=DictAction,
        help='override settings of the config, as key=value pairs (xxx=yyy); lists as '
             'key="[a,b]" or key=a,b, nested as key="[(a,b),(c,d)]", quoted, no spaces')
    parser.add_argument('--non-strict', action='store_true',
                        help='load CKPT even if its keys or shapes differ from the model '
                             '(default: such a checkpoint is an error naming the keys)')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'],
                        default='none', help='job launcher')
    add_threads_argument(parser)
    # torch.distributed.launch passes --local-rank (torch >= 2.0) or --local_rank.
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file not found: {args.config}')
    from engine.checkpoints import is_deepspeed_checkpoint, is_sharded_checkpoint
    if is_sharded_checkpoint(args.checkpoint) or is_deepspeed_checkpoint(args.checkpoint):
        parser.error(f'{args.checkpoint} is a sharded (FSDP2 or DeepSpeed) checkpoint folder; '
                     f'write one file '
                     f'with `python tools/model_converters/consolidate_checkpoint.py '
                     f'{args.checkpoint} OUT.pth` and test OUT.pth')
    if osp.isdir(args.checkpoint):
        parser.error(f'{args.checkpoint} is a directory, not a checkpoint file (nor an FSDP2 '
                     f'or DeepSpeed checkpoint folder)')
    if '://' not in args.checkpoint and not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    from engine.checkpoints.formats import weights_file_problem
    problem = '://' not in args.checkpoint and weights_file_problem(args.checkpoint)
    if problem:  # empty, truncated, another format: before the runner is built
        parser.error(problem)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return parser, args




def trigger_visualization_hook(cfg, args, scope):
    """Turn on the toolbox's visualization hook (added if the config lacks it)."""
    default_hooks = cfg.get('default_hooks')
    if default_hooks is None:
        cfg.default_hooks = default_hooks = {}
    hook = default_hooks.get('visualization')
    if hook is None:
        hook = default_hooks['visualization'] = dict(type=VIS_HOOKS[scope])
    hook['draw'] = True
    if args.show:
        hook['show'] = True
        hook['wait_time'] = args.wait_time
    if cfg.get('visualizer') is None:
        cfg.visualizer = dict(type=VISUALIZERS[scope], name='visualizer',
                              vis_backends=[dict(type='LocalVisBackend')])
    if args.show_dir:
        if scope == 'mmseg':  # every image, as <show_dir>/<image stem>.png, with a legend
            from tools._drawing import show_every_image
            show_every_image(cfg, hook, args.show_dir)
        else:  # DetVisualizationHook joins it to <work_dir>/<timestamp> unless absolute
            hook['test_out_dir'] = osp.abspath(args.show_dir)


def enable_tta(cfg, config_path, scope, parser):
    missing = [key for key in ('tta_model', 'tta_pipeline') if cfg.get(key) is None]
    if missing:
        parser.error(f'--tta: {config_path} has no {" and no ".join(missing)}')
    dataset = cfg.test_dataloader.dataset
    while 'dataset' in dataset:  # wrappers (ConcatDataset, RepeatDataset, ...)
        dataset = dataset['dataset']
    if scope == 'mmdet' and 'batch_shapes_cfg' in dataset:
        dataset.batch_shapes_cfg = None  # fixes the output size, which TTA cannot follow
    dataset.pipeline = cfg.tta_pipeline
    cfg.tta_model.module = cfg.model
    cfg.model = cfg.tta_model


def main(argv=None):
    parser, args = parse_args(argv)
    prepare_process(args.threads)  # CPU threads, upstream noise off (tools/_threads.py)
    cfg, scope = load_config(args, parser)

    cfg.load_from = args.checkpoint

    if args.show or args.show_dir:
        trigger_visualization_hook(cfg, args, scope)
    if args.tta:
        enable_tta(cfg, args.config, scope, parser)

    if args.out is not None:
        if scope == 'mmseg':  # IoUMetric writes the predicted maps there
            evaluators = cfg.test_evaluator
            for evaluator in evaluators if isinstance(evaluators, (list, tuple)) else [evaluators]:
                evaluator['output_dir'] = args.out
                evaluator['keep_results'] = True
        elif not args.out.endswith(('.pkl', '.pickle')):
            parser.error(f'--out must name a .pkl file for detection, got {args.out}')

    from engine.dataset_checks import check_dataset_paths
    problems = check_dataset_paths(cfg.test_dataloader.get('dataset'),
                                   f'{args.config}: test_dataloader')
    if problems:
        parser.error('\n'.join(problems))

    from tools.train import check_devices
    check_devices(cfg, args, parser)  # CPU processes (no CUDA): gloo, as tools/train.py does
    runner = build_runner(cfg, scope)
    from backbones.checkpoint import CheckpointError

    # mmengine loads the checkpoint of a test non-strictly and only logs what did not match;
    # a wrong checkpoint then evaluates a half-random model. Load it strictly here instead.
    # A released reference checkpoint (the InternVL release) is converted in memory first.
    from mmengine.runner import FlexibleRunner

    from tools._released import load_released, load_with_strategy
    try:
        if isinstance(runner, FlexibleRunner):  # sharded configs: loaded inside runner.test()
            load_with_strategy(runner, args.checkpoint, strict=not args.non_strict)
        elif not load_released(runner, args.checkpoint, strict=not args.non_strict):
            runner.load_checkpoint(args.checkpoint, strict=not args.non_strict)
    except CheckpointError as e:  # unreadable, truncated, a refused pickle: says which
        parser.error(str(e))
    except RuntimeError as e:
        advice = '' if args.non_strict else ' (use --non-strict to load it anyway)'
        parser.error(f'{args.checkpoint} does not match the model of {args.config}'
                     f'{advice}:\n{e}')

    if args.out is not None and scope == 'mmdet':
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))

    runner.test()
    from tools._drawing import report_outputs
    report_outputs(args.out, args.show_dir, scope)  # where --out and --show-dir wrote


if __name__ == '__main__':
    main()
