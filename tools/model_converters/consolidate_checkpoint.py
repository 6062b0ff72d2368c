#!/usr/bin/env python
"""Turn a sharded FSDP2 checkpoint folder (iter_N.pth/) into one mmengine checkpoint file.

    python tools/model_converters/consolidate_checkpoint.py SRC_FOLDER DST.pth

DST loads with the plain Runner, DDP and ``tools/test.py``. Runs in one process, without GPUs.
The folder's ``.metadata`` is a pickle written by torch.distributed.checkpoint: only
consolidate folders you (or someone you trust) wrote.
"""
import argparse
import os.path as osp
import sys

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='sharded checkpoint folder written by FSDP2Strategy')
    parser.add_argument('dst', help='single-file checkpoint to write')
    args = parser.parse_args(argv)
    from backbones.strategies import consolidate_checkpoint, is_sharded_checkpoint
    if not is_sharded_checkpoint(args.src):
        parser.error(f'{args.src} is not a sharded checkpoint folder (no .metadata inside)')
    out = consolidate_checkpoint(args.src, args.dst)
    print(f'wrote {args.dst}: {len(out["state_dict"])} tensors')


if __name__ == '__main__':
    main()
