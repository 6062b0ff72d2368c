#!/usr/bin/env python
"""Convert InternViT weights of any published layout to this repository's ``InternViT`` names.

    python tools/model_converters/internvit2mmseg.py SRC DST [--trust-pickle]

SRC: the original InternVL ``.pth``, an OpenGVLab Hugging Face directory or ``.safetensors``
file, a transformers ``InternVLVisionModel`` save, or timm's ``vit_intern300m_patch14_448``
(see ``backbones/checkpoint.py``). DST: ``*.safetensors`` is written with safetensors, any other
name with ``torch.save`` of the plain state dict. DST is written to a temporary file in its folder
and renamed into place, so it is never left half written.

SRC is read with ``torch.load(weights_only=True)`` unless ``--trust-pickle`` is given, which
unpickles it fully: that can run code from the file, so use it only for files from a source you
trust (converting such a file once to ``.safetensors`` is the way to stop trusting it again).
"""
import argparse
import os
import os.path as osp
import sys
import tempfile
from collections import defaultdict

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
if ROOT not in sys.path:  # run from a checkout that is not pip-installed
    sys.path.insert(0, ROOT)

import torch  # noqa: E402

from backbones.checkpoint import (CheckpointError, convert_to_internvit,  # noqa: E402
                                  read_state_dict)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert InternViT weights (InternVL .pth, OpenGVLab Hugging Face, '
                    'transformers InternVLVisionModel, timm) to the InternViT backbone names.')
    parser.add_argument('src', help='source checkpoint: file or Hugging Face directory')
    parser.add_argument('dst', help='output file (.safetensors, or anything else for torch.save)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle SRC fully instead of weights-only; this can run code '
                             'from the file, so only for files from a source you trust')
    args = parser.parse_args(argv)
    if not osp.exists(args.src):
        parser.error(f'source checkpoint not found: {args.src}')
    return args


def _for_safetensors(sd):
    """safetensors refuses tensors that share storage and non-contiguous ones: copy exactly
    those (tied or sliced weights), leave the rest untouched to keep peak memory low."""
    by_storage = defaultdict(list)
    for key, value in sd.items():
        if value.numel():
            by_storage[(value.device, value.untyped_storage().data_ptr())].append(key)
    shared = {k for keys in by_storage.values() if len(keys) > 1 for k in keys}
    return {k: (v.contiguous().clone() if k in shared or not v.is_contiguous() else v)
            for k, v in sd.items()}


def save_state_dict(sd, dst):
    """Write ``sd`` to ``dst`` through a temporary file in the same folder and ``os.replace``."""
    folder = osp.dirname(osp.abspath(dst))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(dst)}.', suffix='.tmp', dir=folder)
    os.close(fd)
    try:
        if dst.endswith('.safetensors'):
            from safetensors.torch import save_file
            save_file(_for_safetensors(sd), tmp, metadata={'format': 'pt'})
        else:
            torch.save(sd, tmp)
        os.replace(tmp, dst)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def main(argv=None):
    args = parse_args(argv)
    try:
        sd, layout, dropped = convert_to_internvit(
            read_state_dict(args.src, trust_pickle=args.trust_pickle))
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    save_state_dict(sd, args.dst)
    print(f'{args.src}: layout {layout}, wrote {len(sd)} tensors to {args.dst}')
    if dropped:
        print(f'dropped {len(dropped)} non-backbone keys: {", ".join(dropped)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
