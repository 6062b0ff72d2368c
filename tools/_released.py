"""How ``tools/test.py`` reads whole reference checkpoints (the InternVL release) directly.

A released file is converted in memory (``backbones.checkpoint.convert_reference_checkpoint``:
the pyramid's ``backbone.up1/up2`` become our neck, the linear head's ``norm`` our ``bn``); a
file that holds only the trained parts (a frozen-backbone release without its ViT) is completed
from the backbone weights the config's ``init_cfg`` names. Both say so in one log line. Our own
checkpoints are left to the runner as before.
"""
import os.path as osp
from typing import Optional

import torch

_WRAPPERS = ('state_dict', 'module', 'model')


def _peek(path: str) -> Optional[dict]:
    """The state dict of a local single-file checkpoint, memory-mapped (tensors are not read
    until used), or None where that is not possible (URLs, legacy non-zip files)."""
    if '://' in path or not osp.isfile(path):
        return None
    from engine.checkpoints.safe_load import register_mmengine_safe_globals
    register_mmengine_safe_globals()
    try:
        obj = torch.load(path, map_location='cpu', weights_only=True, mmap=True)
    except Exception:  # not mmap-able, or refused: the runner's loader reports it properly
        return None
    while isinstance(obj, dict) and not any(torch.is_tensor(v) for v in obj.values()):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), dict)), None)
        if inner is None:
            break
        obj = inner
    return obj if isinstance(obj, dict) else None


def released_state_dict(path: str, logger) -> Optional[dict]:
    """The converted state dict when ``path`` is a whole checkpoint in the reference's layout,
    else None (our own checkpoints, backbone files, anything the runner should read)."""
    from backbones.checkpoint import convert_reference_checkpoint, is_full_checkpoint
    sd = _peek(path)
    if not sd or not is_full_checkpoint(sd):
        return None
    converted, info = convert_reference_checkpoint(sd)
    if set(converted) == set(sd):
        return None  # already our names
    logger.info(f'{path}: a released reference checkpoint ({info["layout"]}, {info["head"]} '
                f'head), converted in memory to this config\'s names')
    return converted


def complete_from_init_cfg(model, state_dict: dict, logger) -> dict:
    """Fill in the backbone of a file that left it out (a frozen backbone is not part of the
    reference's head-tuning / linear-probing releases) from the config's ``init_cfg``."""
    own = model.state_dict()
    missing = [k for k in own if k.startswith('backbone.') and k not in state_dict]
    if not missing or any(k.startswith('backbone.blocks.') for k in state_dict):
        return state_dict
    init_cfg = getattr(model.backbone, '_init_cfg', None)
    if not init_cfg:
        raise RuntimeError(f'the checkpoint holds no ViT blocks ({len(missing)} backbone keys '
                           f'missing, e.g. {missing[0]}) and the config\'s backbone has no '
                           f'init_cfg to take them from')
    model.backbone.init_weights()
    logger.info(f'the checkpoint leaves the frozen backbone out: {len(missing)} backbone '
                f'tensors taken from {init_cfg["checkpoint"]} (the config\'s init_cfg)')
    own = model.state_dict()
    return {**{k: own[k] for k in missing}, **state_dict}


def load_released(runner, path: str, strict: bool) -> bool:
    """Load ``path`` into a plain ``Runner`` if it is a released reference checkpoint; returns
    whether it was (False: load it as usual)."""
    from mmengine.model import is_model_wrapper
    from mmengine.runner.checkpoint import load_state_dict
    state_dict = released_state_dict(path, runner.logger)
    if state_dict is None:
        return False
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    state_dict = complete_from_init_cfg(model, state_dict, runner.logger)
    load_state_dict(model, state_dict, strict=strict, logger=runner.logger)
    runner._has_loaded = True
    return True


def load_with_strategy(runner, path: str, strict: bool) -> None:
    """A ``FlexibleRunner`` builds and shards its model inside ``runner.test()`` and only then
    loads ``load_from``, non-strictly: point it at ``path`` (a converted copy in the work dir
    for a released reference file) and make that load strict. These configs train the
    backbone, so their releases hold it (nothing to complete; a file without it fails the
    strict load, naming the keys)."""
    import functools
    state_dict = released_state_dict(path, runner.logger)
    if state_dict is not None:
        converted = osp.join(runner.work_dir, 'converted_' + osp.basename(path))
        torch.save({'meta': dict(converted_from=osp.abspath(path)), 'state_dict': state_dict},
                   converted)
        runner.logger.info(f'converted copy written to {converted}')
        path = converted
    runner._load_from = path
    runner.load_checkpoint = functools.partial(runner.load_checkpoint, strict=strict)
