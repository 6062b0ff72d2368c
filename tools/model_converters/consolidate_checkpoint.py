#!/usr/bin/env python
"""Turn a sharded checkpoint folder (iter_N.pth/) into one mmengine checkpoint file.

    python tools/model_converters/consolidate_checkpoint.py SRC_FOLDER DST.pth [--overwrite]
                                                            [--trust-pickle]

SRC_FOLDER is written by FSDP2Strategy (torch.distributed.checkpoint) or DeepSpeedZeroStrategy
(ZeRO 1/2/3; needs the deepspeed package). DST (float32 weights, no optimizer state) loads with
the plain Runner, DDP and ``tools/test.py``. Runs in one process, without GPUs.

Nothing in SRC_FOLDER can run code: an FSDP2 folder's metadata pickle is read through an
allow-list of DCP's metadata classes, DeepSpeed's files with ``torch.load(weights_only=True)``
and an allow-list of exactly what DeepSpeed and MMEngine write there. A file that names
anything else is refused, by name, before anything is unpickled; ``--trust-pickle`` unpickles
DeepSpeed's files fully instead (only for a folder you, or someone you trust, wrote).
An existing DST is replaced only with ``--overwrite``.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint folder written by FSDP2Strategy or '
                                    'DeepSpeedZeroStrategy')
    parser.add_argument('dst', help='single-file checkpoint to write')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle the files of a DeepSpeed folder fully instead of '
                             'weights-only; this can run code from them, so only for a folder '
                             'you (or someone you trust) wrote')
    args = parser.parse_args(argv)
    from backbones.checkpoint import CheckpointError
    from engine.checkpoints import (consolidate_checkpoint, is_deepspeed_checkpoint,
                                    is_sharded_checkpoint)
    if not (is_sharded_checkpoint(args.src) or is_deepspeed_checkpoint(args.src)):
        parser.error(f'{args.src} is not a sharded checkpoint folder (neither the .metadata of '
                     f'FSDP2 nor the *model_states.pt of DeepSpeed inside)')
    from tools.model_converters._dst import check_dst
    check_dst(parser, args.src, args.dst, args.overwrite)
    try:
        out = consolidate_checkpoint(args.src, args.dst, trust_pickle=args.trust_pickle)
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    print(f'wrote {args.dst}: {len(out["state_dict"])} tensors')
    return 0


if __name__ == '__main__':
    sys.exit(main())
