#!/usr/bin/env python
"""Convert InternViT weights of any published layout to this repository's ``InternViT`` names,
and whole reference checkpoints (InternVL's released segmentation / detection models) to our
configs' models.

    python tools/model_converters/internvit2mmseg.py SRC DST [--trust-pickle] [--overwrite]

SRC: the original InternVL ``.pth``, an OpenGVLab Hugging Face directory or ``.safetensors``
file, a transformers ``InternVLVisionModel`` save, or timm's ``vit_intern300m_patch14_448``
(see ``backbones/checkpoint.py``). DST: ``*.safetensors`` is written with safetensors, any other
name with ``torch.save`` of the plain state dict. DST is written to a temporary file in its folder
and renamed into place, so it is never left half written. DST is checked before SRC is
read: it may not be SRC, a directory or under a file, and an existing DST is replaced only with
``--overwrite``.

Whole checkpoints (``backbone.*`` with ``decode_head.*`` / ``auxiliary_head.*`` / ``neck.*`` /
``rpn_head.*`` / ``roi_head.*``, bare or under ``module`` / ``state_dict``: the InternVL
reference's released files, the ViT-Adapter's, or ours) become an mmengine checkpoint
(``{'meta': ..., 'state_dict': ...}``) that ``mmengine.runner.load_checkpoint(model, DST,
strict=True)`` and ``tools/test.py`` load into the matching config; the configs it fits are
printed. ``--backbone-only`` extracts the backbone of such a file instead (the other keys are
listed as dropped).

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

from backbones.checkpoint import (CheckpointError, convert_reference_checkpoint,  # noqa: E402
                                  convert_to_internvit, is_full_checkpoint, read_state_dict)
from tools.model_converters._dst import check_dst  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Convert InternViT weights (InternVL .pth, OpenGVLab Hugging Face, '
                    'transformers InternVLVisionModel, timm) to the InternViT backbone names.')
    parser.add_argument('src', help='source checkpoint: file or Hugging Face directory')
    parser.add_argument('dst', help='output file (.safetensors, or anything else for torch.save)')
    parser.add_argument('--trust-pickle', action='store_true',
                        help='unpickle SRC fully instead of weights-only; this can run code '
                             'from the file, so only for files from a source you trust')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing DST')
    parser.add_argument('--backbone-only', action='store_true',
                        help='of a whole segmentor / detector checkpoint, write only the '
                             'backbone (as InternViT weights for init_cfg)')
    args = parser.parse_args(argv)
    if not osp.exists(args.src):
        parser.error(f'source checkpoint not found: {args.src}')
    check_dst(parser, args.src, args.dst, args.overwrite)  # before SRC is read
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


def matching_configs(info):
    """The config files of this repository that a whole checkpoint fits (by its head, its
    number of classes and ViT blocks, and whether it holds the ViT at all)."""
    import glob
    configs = osp.join(ROOT, 'configs')
    datasets = {150: 'ade20k', 171: 'coco-stuff164k', 80: 'coco'}
    dataset = datasets.get(info['num_classes'], '*')
    backbone = {48: 'intern_vit_6b', 45: 'intern_vit_6b_448px_*', 24: 'intern_vit_300m'}.get(
        info['num_blocks'], 'intern_vit_*')
    trained_vit = info['num_blocks'] is not None
    if info['layout'].startswith('adapter'):
        task = 'detection' if info['layout'].endswith('detection') else 'segmentation'
        pattern = osp.join(configs, task, backbone, '*', f'*adapter*_{dataset}*.py')
    elif info['layout'] == 'detection':
        family = 'full_tuning' if trained_vit else 'head_tuning'
        pattern = osp.join(configs, 'detection', backbone, family, f'*_fpn_*_{dataset}-*.py')
    else:
        family = {('uper', True): 'full_tuning', ('uper', False): 'head_tuning',
                  ('linear', True): 'few_shot', ('linear', False): 'linear_probing'}[
                      (info['head'], trained_vit)]
        pattern = osp.join(configs, 'segmentation', backbone, family, f'*_{dataset}*.py')
    return sorted(osp.relpath(p, ROOT) for p in glob.glob(pattern))


def main(argv=None):
    args = parse_args(argv)
    # Our own tools/train.py checkpoints hold MMEngine's types (HistoryBuffer, numpy scalars):
    # allow-list exactly those for the weights-only read, as tools/train.py / test.py do.
    from engine.checkpoints.safe_load import register_mmengine_safe_globals
    register_mmengine_safe_globals()
    try:
        sd = read_state_dict(args.src, trust_pickle=args.trust_pickle)
        if is_full_checkpoint(sd) and not args.backbone_only:
            return _convert_whole(args, sd)
        non_backbone = []
        if is_full_checkpoint(sd):  # --backbone-only: the ViT of a whole checkpoint
            non_backbone = [k for k in sd if not k.replace('module.', '', 1).startswith(
                'backbone.') or k.replace('module.', '', 1).startswith(
                    ('backbone.up1.', 'backbone.up2.'))]
            sd = {k: v for k, v in sd.items() if k not in set(non_backbone)}
        sd, layout, dropped = convert_to_internvit(sd)
    except CheckpointError as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    dropped = sorted(set(dropped) | set(non_backbone))
    save_state_dict(sd, args.dst)
    print(f'{args.src}: layout {layout}, wrote {len(sd)} tensors to {args.dst}')
    if dropped:
        print(f'dropped {len(dropped)} non-backbone keys: {", ".join(dropped)}')
    return 0


def _convert_whole(args, sd):
    if args.dst.endswith('.safetensors'):
        print(f'error: {args.src} is a whole segmentor / detector checkpoint, written as an '
              f'mmengine checkpoint: name DST *.pth, not {args.dst} (or pass --backbone-only)',
              file=sys.stderr)
        return 1
    sd, info = convert_reference_checkpoint(sd)
    meta = dict(converted_from=osp.basename(args.src), converter='internvit2mmseg',
                layout=info['layout'])
    save_state_dict({'meta': meta, 'state_dict': sd}, args.dst)
    vit = (f'{info["num_blocks"]} ViT blocks' if info['num_blocks'] else
           'no ViT blocks (frozen backbone left out: tools/test.py completes it from the '
           "config's init_cfg)")
    print(f'{args.src}: whole {info["layout"]} checkpoint ({info["head"]} head, '
          f'{info["num_classes"]} classes, {vit}); wrote {len(sd)} tensors to {args.dst}')
    fits = matching_configs(info)
    if fits:
        print('fits: ' + '\n      '.join(fits))
    else:
        print('no config of this repository matches it')
    return 0


if __name__ == '__main__':
    sys.exit(main())
