"""Reading InternViT checkpoints in every published layout, safely, and converting them to ours.

Our parameter names are those of the original InternVL ``.pth`` (also timm's ViT names):
``cls_token, pos_embed, patch_embed.proj.*, blocks.N.{norm1, attn.qkv, attn.q_norm, attn.k_norm,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}``.

Supported layouts, detected by their tell-tale keys:

* ``internvl`` -- the original InternVL ``.pth`` (optionally wrapped in ``module``/``state_dict``),
  and timm's ``vit_intern300m_patch14_448`` (same names; its ``head``/``norm``/``fc_norm`` are
  dropped),
* ``hf_remote`` -- OpenGVLab's Hugging Face ``InternVisionModel`` (remote code):
  ``embeddings.class_embedding``, ``encoder.layers.N.attn.qkv``, ``ls1``..., possibly under a
  ``vision_model.`` prefix inside a full InternVL chat checkpoint,
* ``hf_native`` -- transformers' ``InternVLVisionModel``: ``embeddings.cls_token``,
  ``encoder.layer.N.attention.{q,k,v}_proj``, ``lambda_1``/``lambda_2``...

Files are read as safetensors (a file, a sharded index json, or a directory holding either) or
with ``torch.load(weights_only=True)``: nothing here can unpickle an arbitrary object.
"""
from __future__ import annotations

import json
import logging
import os
import os.path as osp
import pickle
import re
from typing import Dict, List, Tuple

import torch

from .pos_embed import resample_abs_pos_embed

StateDict = Dict[str, torch.Tensor]

LAYOUTS = ('internvl', 'hf_remote', 'hf_native')

# Outer prefixes under which a vision encoder is found in bigger checkpoints.
_PREFIXES = ('module.', 'model.vision_tower.', 'vision_tower.', 'model.vision_model.',
             'vision_model.', 'backbone.', 'encoder.model.')
# Keys of published files that are not part of a dense-prediction backbone.
_IGNORED = re.compile(r'^(head\.|fc_norm\.|norm\.|attn_pool\.|layernorm\.|pooler\.|'
                      r'embeddings\.mask_token$|clip_projector)')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the model."""


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


# --------------------------------------------------------------------------- reading
def torch_load_safe(path: str, map_location='cpu'):
    """``torch.load(weights_only=True)`` with an error that says what was refused and why."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f'Refused to load {path}: it is a pickle that needs objects outside the safe '
            f'weights-only set ({str(e).splitlines()[-1] if str(e) else e}). Loading it would '
            f'run code from the file. If you trust its source, convert it once with '
            f'`python tools/model_converters/internvit2mmseg.py {path} OUT.safetensors '
            f'--trust-pickle` and load OUT.safetensors instead.') from e


def _read_safetensors(path: str) -> StateDict:
    from safetensors.torch import load_file
    return load_file(path, device='cpu')


def _read_index(index_path: str) -> StateDict:
    with open(index_path) as f:
        weight_map = json.load(f).get('weight_map')
    if not weight_map:
        raise CheckpointError(f'{index_path}: no "weight_map" in the index json')
    folder = osp.dirname(index_path)
    sd: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = osp.join(folder, shard)
        if not osp.isfile(shard_path):
            raise CheckpointError(f'{index_path}: shard {shard} is missing')
        sd.update(_read_safetensors(shard_path) if shard.endswith('.safetensors')
                  else torch_load_safe(shard_path))
    return sd


def read_state_dict(path: str, trust_pickle: bool = False) -> StateDict:
    """Read the tensors of ``path`` (file or Hugging Face-style directory), unwrapping
    ``module`` / ``state_dict`` / ``model`` containers.

    ``trust_pickle=True`` (converter CLI only, on explicit request) allows a full unpickle.
    """
    path = os.fspath(path)
    if not osp.exists(path):
        raise FileNotFoundError(f'checkpoint not found: {path}')
    if osp.isdir(path):
        for name in ('model.safetensors', 'model.safetensors.index.json',
                     'pytorch_model.bin', 'pytorch_model.bin.index.json'):
            if osp.isfile(osp.join(path, name)):
                return read_state_dict(osp.join(path, name), trust_pickle)
        raise CheckpointError(f'{path}: directory holds no model.safetensors(.index.json) or '
                              f'pytorch_model.bin(.index.json)')
    if path.endswith('.index.json'):
        return _read_index(path)
    if path.endswith('.safetensors'):
        obj = _read_safetensors(path)
    elif trust_pickle:
        obj = torch.load(path, map_location='cpu', weights_only=False)
    else:
        obj = torch_load_safe(path)
    while isinstance(obj, dict) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in ('module', 'state_dict', 'model'):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise CheckpointError(f'{path}: expected a dict of tensors, got {type(obj).__name__}')
    for key in ('module', 'state_dict', 'model'):
        if isinstance(obj.get(key), dict):  # tensors next to a wrapped state dict
            obj = obj[key]
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


# --------------------------------------------------------------------------- conversion
def _strip_prefixes(sd: StateDict) -> StateDict:
    changed = True
    while changed:
        changed = False
        for prefix in _PREFIXES:
            hits = [k for k in sd if k.startswith(prefix)]
            # A prefix that marks the vision encoder inside a bigger model: keep only it.
            if hits and (len(hits) == len(sd) or any(
                    t in k for k in hits for t in ('blocks.0.', 'encoder.layer'))):
                sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
                changed = True
    return sd


def detect_layout(sd: StateDict) -> str:
    """Name the layout of a (prefix-stripped) state dict by its tell-tale keys."""
    keys = list(sd)
    if any(k.startswith('encoder.layers.') for k in keys) or 'embeddings.class_embedding' in sd:
        return 'hf_remote'
    if any(k.startswith('encoder.layer.') for k in keys) or 'embeddings.cls_token' in sd:
        return 'hf_native'
    if any(k.startswith('blocks.') for k in keys) and ('pos_embed' in sd or 'cls_token' in sd):
        return 'internvl'
    raise CheckpointError(f'unrecognised checkpoint layout (first keys: {keys[:5]}); expected '
                          f'the InternVL .pth, OpenGVLab Hugging Face, transformers '
                          f'InternVLVisionModel or timm layout')


_HF_REMOTE = [
    (r'^embeddings\.class_embedding$', 'cls_token'),
    (r'^embeddings\.position_embedding$', 'pos_embed'),
    (r'^embeddings\.patch_embedding\.', 'patch_embed.proj.'),
    (r'^encoder\.layers\.(\d+)\.ls([12])$', r'blocks.\1.ls\2.gamma'),
    (r'^encoder\.layers\.(\d+)\.', r'blocks.\1.'),
]
_HF_NATIVE = [
    (r'^embeddings\.cls_token$', 'cls_token'),
    (r'^embeddings\.position_embeddings$', 'pos_embed'),
    (r'^embeddings\.patch_embeddings\.projection\.', 'patch_embed.proj.'),
    (r'^encoder\.layer\.(\d+)\.lambda_([12])$', r'blocks.\1.ls\2.gamma'),
    (r'^encoder\.layer\.(\d+)\.layernorm_before\.', r'blocks.\1.norm1.'),
    (r'^encoder\.layer\.(\d+)\.layernorm_after\.', r'blocks.\1.norm2.'),
    (r'^encoder\.layer\.(\d+)\.attention\.projection_layer\.', r'blocks.\1.attn.proj.'),
    (r'^encoder\.layer\.(\d+)\.attention\.([qk])_norm\.', r'blocks.\1.attn.\2_norm.'),
    (r'^encoder\.layer\.(\d+)\.mlp\.', r'blocks.\1.mlp.'),
]


def _rename(sd: StateDict, rules) -> Tuple[StateDict, List[str]]:
    out, unknown = {}, []
    for k, v in sd.items():
        for pattern, repl in rules:
            new, n = re.subn(pattern, repl, k)
            if n:
                out[new] = v
                break
        else:
            unknown.append(k)
    return out, unknown


def convert_to_internvit(sd: StateDict) -> Tuple[StateDict, str, List[str]]:
    """Convert a state dict of any supported layout to ``InternViT``'s names.

    Returns (converted state dict, detected layout, dropped keys). Keys of known non-backbone
    parts (classification heads, final norms, mask tokens) are dropped; keys of the layout that
    are not recognised are kept under their own name so that loading reports them.
    """
    sd = _strip_prefixes(dict(sd))
    layout = detect_layout(sd)
    dropped = sorted(k for k in sd if _IGNORED.match(k))
    sd = {k: v for k, v in sd.items() if k not in set(dropped)}
    if layout == 'internvl':
        return sd, layout, dropped
    if layout == 'hf_remote':
        out, unknown = _rename(sd, _HF_REMOTE)
    else:
        qkv = {}
        rest = {}
        for k, v in sd.items():
            m = re.match(r'^encoder\.layer\.(\d+)\.attention\.([qkv])_proj\.(weight|bias)$', k)
            if m:
                qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = v
            else:
                rest[k] = v
        out, unknown = _rename(rest, _HF_NATIVE)
        for (i, kind), parts in qkv.items():
            if set(parts) != {'q', 'k', 'v'}:
                raise CheckpointError(f'encoder.layer.{i}.attention: {kind} of q/k/v projections '
                                      f'incomplete (found {sorted(parts)})')
            out[f'blocks.{i}.attn.qkv.{kind}'] = torch.cat([parts['q'], parts['k'], parts['v']])
    for k in unknown:  # surface them under their own name; loading reports them
        out[k] = sd[k]
    return out, layout, dropped


# --------------------------------------------------------------------------- loading
def _resample_to_model(model, sd: StateDict) -> None:
    """Resample position embeddings and the patch stem where the checkpoint's grid or patch
    size differs from the model's (what the reference does for 448px weights at 224, or patch 14
    weights in a patch-16 adapter)."""
    pe = sd.get('pos_embed')
    if pe is not None and pe.shape != model.pos_embed.shape and pe.ndim == 3 \
            and pe.shape[-1] == model.pos_embed.shape[-1]:
        old = int(round((pe.shape[1] - 1) ** 0.5))
        if old * old == pe.shape[1] - 1:
            _log(f'resampling pos_embed from a {old}x{old} grid to {model.pretrain_grid}',
                 logging.WARNING)
            sd['pos_embed'] = resample_abs_pos_embed(pe, model.pretrain_grid, (old, old))
    w = sd.get('patch_embed.proj.weight')
    target = model.patch_embed.proj.weight
    if w is not None and w.shape[:2] == target.shape[:2] and w.shape[2:] != target.shape[2:]:
        from timm.layers import resample_patch_embed
        _log(f'resampling patch_embed from {tuple(w.shape[2:])} to {tuple(target.shape[2:])}',
             logging.WARNING)
        sd['patch_embed.proj.weight'] = resample_patch_embed(w.float(), list(target.shape[2:]))


def check_state_dict(model_sd: Dict[str, torch.Tensor], sd: StateDict, source: str,
                     strict: bool = True) -> None:
    """Raise (or warn, with ``strict=False``) about missing/unexpected keys; always raise on
    the first shape mismatch, naming the key and both shapes."""
    for k, v in sd.items():
        if k in model_sd and tuple(v.shape) != tuple(model_sd[k].shape):
            raise CheckpointError(f'{source}: shape mismatch for {k}: checkpoint '
                                  f'{tuple(v.shape)} vs model {tuple(model_sd[k].shape)}')
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    if missing or unexpected:
        msg = (f'{source}: missing keys {missing[:10]}{" ..." if len(missing) > 10 else ""} '
               f'({len(missing)}); unexpected keys {unexpected[:10]}'
               f'{" ..." if len(unexpected) > 10 else ""} ({len(unexpected)})')
        if strict:
            raise CheckpointError(msg + "; pass strict=False in init_cfg to load anyway")
        _log(msg, logging.WARNING)


def load_pretrained(model, path: str, strict: bool = True) -> Tuple[str, List[str]]:
    """Load ``path`` (any supported layout) into an ``InternViT``. Returns (layout, dropped)."""
    sd, layout, dropped = convert_to_internvit(read_state_dict(path))
    _resample_to_model(model, sd)
    model_sd = model.state_dict()
    check_state_dict(model_sd, sd, path, strict)
    sd = {k: v.to(model_sd[k].dtype) for k, v in sd.items() if k in model_sd}
    model.load_state_dict(sd, strict=False)
    _log(f'loaded {len(sd)} tensors from {path} (layout: {layout}'
         f'{f", dropped {len(dropped)} non-backbone keys" if dropped else ""})')
    return layout, dropped
