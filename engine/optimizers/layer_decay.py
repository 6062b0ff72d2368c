"""Layer-wise learning-rate decay for InternViT (BEiT / ViTDet style).

Two pure functions do the work and are what the tests exercise:

* :func:`get_layer_id` maps a parameter name to its depth: the stem (``patch_embed``,
  ``cls_token``, ``pos_embed``) is layer 0, ``blocks.i`` is layer ``i + 1``, and everything
  outside the plain ViT (necks, heads, adapter modules) is layer ``num_layers + 1``;
* :func:`build_param_groups` turns named parameters into optimizer parameter groups with learning
  rate ``base_lr * decay_rate ** (num_layers + 1 - layer_id)`` and weight decay except for
  1-D parameters (norm weights, biases, LayerScale ``gamma``), ``pos_embed`` and ``cls_token``
  (and an adapter's ``level_embed``).

:class:`InternViTLayerDecayOptimizerConstructor` plugs them into MMEngine::

    optim_wrapper = dict(
        type='AmpOptimWrapper', dtype='bfloat16',
        optimizer=dict(type='AdamW', lr=4e-5, betas=(0.9, 0.999), weight_decay=0.05),
        constructor='InternViTLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95))
"""
from __future__ import annotations

import logging
import re
from typing import Collection, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import DefaultOptimWrapperConstructor, OptimWrapper
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS, OPTIM_WRAPPERS, OPTIMIZERS
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.instancenorm import _InstanceNorm

# Outer prefixes of the backbone inside a bigger model (DDP wrapper, mmseg/mmdet segmentor).
_OUTER_PREFIXES = ('module.', 'backbone.')
# Name segments that FSDP and activation-checkpoint wrappers insert (``use_orig_params=True``).
_WRAPPER_SEGMENTS = ('_fsdp_wrapped_module.', '_checkpoint_wrapped_module.')
_STEM = ('patch_embed.', 'cls_token', 'pos_embed')
_BLOCK = re.compile(r'^blocks\.(\d+)\.')
# Names (suffixes) that never get weight decay, whatever their shape (our default).
NO_DECAY_SUFFIXES = ('pos_embed', 'cls_token', 'level_embed', '.gamma', '.bias')
# What the InternVL / PIIP reference constructors effectively exempt by name: only biases.
# (They also list 'pos_embed' and 'cls_token', but compare them with the full names, which
# carry the 'backbone.' prefix, so those never match and both embeddings decay.)
REFERENCE_NO_DECAY_SUFFIXES = ('.bias', )
_NORM_TYPES = (_BatchNorm, _InstanceNorm, nn.GroupNorm, nn.LayerNorm)


def _strip_outer_prefixes(name: str) -> str:
    for seg in _WRAPPER_SEGMENTS:
        name = name.replace(seg, '')
    changed = True
    while changed:
        changed = False
        for prefix in _OUTER_PREFIXES:
            if name.startswith(prefix):
                name = name[len(prefix):]
                changed = True
    return name


def get_layer_id(param_name: str, num_layers: int) -> int:
    """Depth of a parameter for layer-wise lr decay.

    Args:
        param_name (str): Parameter name, bare (``blocks.3.attn.qkv.weight``) or inside a
            segmentor/detector (``backbone.blocks.3.attn.qkv.weight``, ``module.backbone...``),
            FSDP-wrapped or not (``_fsdp_wrapped_module.`` segments are ignored).
        num_layers (int): Number of transformer blocks of the backbone.

    Returns:
        int: 0 for ``patch_embed``/``cls_token``/``pos_embed``, ``i + 1`` for ``blocks.i``,
        ``num_layers + 1`` for everything else (necks, heads, adapter modules).
    """
    name = _strip_outer_prefixes(param_name)
    if name.startswith(_STEM):
        return 0
    m = _BLOCK.match(name)
    if m:
        block = int(m.group(1))
        if block >= num_layers:
            raise ValueError(f'{param_name}: block {block} is beyond num_layers={num_layers}; '
                             f'set paramwise_cfg num_layers to the depth of the backbone')
        return block + 1
    return num_layers + 1


def is_no_decay(param_name: str, param: torch.Tensor, extra_keys: Sequence[str] = (),
                no_decay_names: Optional[Collection[str]] = None,
                suffixes: Sequence[str] = NO_DECAY_SUFFIXES) -> bool:
    """Whether a parameter is excluded from weight decay.

    Names ending in one of ``suffixes`` (default: biases, ``pos_embed``, ``cls_token``,
    LayerScale ``gamma``, ``level_embed``), names containing one of ``extra_keys``, and either
    every 1-D parameter (norm weights) or, when ``no_decay_names`` is given, the parameters
    named there (see :func:`norm_param_names`).
    """
    if param_name.endswith(tuple(suffixes)) or any(k in param_name for k in extra_keys):
        return True
    if no_decay_names is not None:
        return param_name in no_decay_names
    return param.ndim <= 1


def norm_param_names(model: nn.Module) -> Set[str]:
    """Names of the parameters held by norm layers and LayerScale modules of ``model``.

    Decided by module type rather than by tensor shape, so that it also holds for a model whose
    parameters FSDP has flattened into 1-D shards (``use_orig_params=True``).
    """
    names = set()
    for mod_name, module in model.named_modules():
        cls_name = type(module).__name__
        if isinstance(module, _NORM_TYPES) or 'Norm' in cls_name or cls_name == 'LayerScale':
            for p_name, _ in module.named_parameters(recurse=False):
                names.add(f'{mod_name}.{p_name}' if mod_name else p_name)
    return names


def build_param_groups(named_params: Iterable[Tuple[str, torch.Tensor]],
                       base_lr: float,
                       weight_decay: float,
                       num_layers: int,
                       decay_rate: float,
                       no_decay_keys: Sequence[str] = (),
                       no_decay_names: Optional[Collection[str]] = None,
                       no_decay_suffixes: Sequence[str] = NO_DECAY_SUFFIXES) -> List[dict]:
    """Optimizer parameter groups with layer-wise lr decay.

    Args:
        named_params: ``(name, parameter)`` pairs, e.g. ``model.named_parameters()``.
            Parameters with ``requires_grad=False`` are left out.
        base_lr (float): Learning rate of the last layer (heads, necks).
        weight_decay (float): Weight decay of the decayed parameters.
        num_layers (int): Depth of the backbone (48 for InternViT-6B, 45 for the 448px
            releases, 24 for InternViT-300M).
        decay_rate (float): Per-layer decay of the lr scale.
        no_decay_keys (Sequence[str]): Extra name substrings without weight decay.
        no_decay_names (Collection[str], optional): Names without weight decay in place of the
            "every 1-D parameter" rule (needed once FSDP has flattened the parameters).
        no_decay_suffixes (Sequence[str]): Name endings without weight decay, whatever the
            shape; :data:`REFERENCE_NO_DECAY_SUFFIXES` (``('.bias',)``) is what the reference
            recipes effectively used.

    Returns:
        list[dict]: One group per (layer, decay/no-decay) that has parameters, ordered by layer,
        each with ``params``, ``lr`` (``base_lr * lr_scale``), ``weight_decay``, ``lr_scale``,
        ``layer_id`` and ``group_name``.
    """
    if not 0 < decay_rate <= 1:
        raise ValueError(f'layer_decay_rate must be in (0, 1], got {decay_rate}')
    groups: Dict[Tuple[int, bool], dict] = {}
    for name, param in named_params:
        if not param.requires_grad:
            continue
        layer_id = get_layer_id(name, num_layers)
        no_decay = is_no_decay(name, param, no_decay_keys, no_decay_names, no_decay_suffixes)
        key = (layer_id, no_decay)
        if key not in groups:
            scale = decay_rate ** (num_layers + 1 - layer_id)
            groups[key] = dict(
                params=[], lr=base_lr * scale, lr_scale=scale,
                weight_decay=0.0 if no_decay else weight_decay, layer_id=layer_id,
                group_name=f'layer_{layer_id}_{"no_decay" if no_decay else "decay"}')
        groups[key]['params'].append(param)
    return [groups[k] for k in sorted(groups)]


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class InternViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Optimizer-wrapper constructor with layer-wise lr decay for InternViT models.

    ``paramwise_cfg`` keys:

    * ``num_layers`` (int, required): depth of the backbone;
    * ``layer_decay_rate`` (float, required): per-layer decay, e.g. 0.95;
    * ``no_decay_keys`` (list[str], optional): extra name substrings without weight decay;
    * ``no_decay_suffixes`` (list[str], optional): name endings without weight decay, whatever
      their shape (default :data:`NO_DECAY_SUFFIXES`: biases, ``pos_embed``, ``cls_token``,
      LayerScale ``gamma``, ``level_embed``). The reference recipes set ``['.bias']``
      (:data:`REFERENCE_NO_DECAY_SUFFIXES`): their name exemption of ``pos_embed`` /
      ``cls_token`` never matched, so those decay. 1-D parameters never decay either way.

    The base learning rate and weight decay are the optimizer's ``lr`` and ``weight_decay``.
    Works with a bare backbone or a segmentor/detector (``backbone.`` names) and with DDP
    (``module.`` names).
    """

    def __init__(self, optim_wrapper_cfg: dict, paramwise_cfg: Optional[dict] = None) -> None:
        super().__init__(optim_wrapper_cfg, paramwise_cfg=None)
        cfg = dict(paramwise_cfg or {})
        missing = [k for k in ('num_layers', 'layer_decay_rate') if k not in cfg]
        if missing:
            raise ValueError(f'InternViTLayerDecayOptimizerConstructor: paramwise_cfg lacks '
                             f'{missing} (got {sorted(cfg)})')
        unknown = sorted(set(cfg) - {'num_layers', 'layer_decay_rate', 'no_decay_keys',
                                     'no_decay_suffixes'})
        if unknown:
            raise ValueError(f'InternViTLayerDecayOptimizerConstructor: unknown paramwise_cfg '
                             f'keys {unknown}')
        self.num_layers = int(cfg['num_layers'])
        self.decay_rate = float(cfg['layer_decay_rate'])
        self.no_decay_keys = tuple(cfg.get('no_decay_keys', ()))
        self.no_decay_suffixes = tuple(cfg.get('no_decay_suffixes', NO_DECAY_SUFFIXES))
        if self.base_lr is None:
            raise ValueError('the optimizer config needs an lr for layer-wise decay')

    def __call__(self, model: nn.Module) -> OptimWrapper:
        if hasattr(model, 'module'):
            model = model.module
        named = list(model.named_parameters())
        no_decay_names = norm_param_names(model)
        if not any('_fsdp_wrapped_module.' in n for n, _ in named):
            # Unflattened parameters: every 1-D one (norm weights of any kind, biases) as well.
            no_decay_names |= {n for n, p in named if p.ndim <= 1}
        groups = build_param_groups(named, self.base_lr, self.base_wd or 0.0, self.num_layers,
                                    self.decay_rate, self.no_decay_keys, no_decay_names,
                                    self.no_decay_suffixes)
        for g in groups:
            print_log(f"layer decay: {g['group_name']}: {len(g['params'])} params, "
                      f"lr_scale={g['lr_scale']:.4g}, weight_decay={g['weight_decay']}",
                      logger='current', level=logging.DEBUG)
        optimizer_cfg = dict(self.optimizer_cfg)
        optimizer_cfg['params'] = groups
        optimizer = OPTIMIZERS.build(optimizer_cfg)
        wrapper_cfg = dict(self.optim_wrapper_cfg)
        wrapper_cfg.setdefault('type', 'OptimWrapper')
        return OPTIM_WRAPPERS.build(wrapper_cfg, default_args=dict(optimizer=optimizer))
