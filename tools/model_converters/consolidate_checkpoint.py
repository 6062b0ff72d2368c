#!/usr/bin/env python
"""Turn a sharded checkpoint folder (iter_N.pth/) into one mmengine checkpoint file.

    python tools/model_converters/consolidate_checkpoint.py SRC_FOLDER DST.pth

SRC_FOLDER is written by FSDP2Strategy (torch.distributed.checkpoint) or DeepSpeedZeroStrategy
(ZeRO 1/2/3; needs the deepspeed package). DST (float32 weights, no optimizer state) loads with
the plain Runner, DDP and ``tools/test.py``. Runs in one process, without GPUs. An FSDP2
folder's metadata pickle is read through an allow-list (a crafted one is refused before it
runs); DeepSpeed's files are pickles that DeepSpeed loads as they are: only consolidate
DeepSpeed folders you (or someone you trust) wrote.
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
    args = parser.parse_args(argv)
    from engine.checkpoints import (consolidate_checkpoint, is_deepspeed_checkpoint,
                                    is_sharded_checkpoint)
    if not (is_sharded_checkpoint(args.src) or is_deepspeed_checkpoint(args.src)):
        parser.error(f'{args.src} is not a sharded checkpoint folder (neither the .metadata of '
                     f'FSDP2 nor the *model_states.pt of DeepSpeed inside)')
    out = consolidate_checkpoint(args.src, args.dst)
    print(f'wrote {args.dst}: {len(out["state_dict"])} tensors')


if __name__ == '__main__':
    main()
