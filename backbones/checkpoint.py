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
import torch.nn.functional as F

from .pos_embed import resample_abs_pos_embed

StateDict = Dict[str, torch.Tensor]

LAYOUTS = ('internvl', 'hf_remote', 'hf_native')

# Outer prefixes under which a vision encoder is found in bigger checkpoints.
_PREFIXES = ('module.', 'model.vision_tower.', 'vision_tower.', 'model.vision_model.',
             'vision_model.', 'backbone.', 'encoder.model.')
# Keys of published files that are not part of a dense-prediction backbone.
_IGNORED = re.compile(r'^(head\.|fc_norm\.|norm\.|attn_pool\.|layernorm\.|pooler\.|'
                      r'embeddings\.mask_token$|clip_projector)')


# --------------------------------------------------------------------------- reading
# Names that make a pickle run code (or reach what does) when it is loaded: the refusal of a file
# that names one says so plainly. Python 2 names are included: pickle protocol 2 writes
# ``subprocess`` as ``commands`` and ``builtins`` as ``__builtin__``.
_CODE_MODULES = ('os', 'posix', 'nt', 'subprocess', 'commands', 'sys', 'builtins', '__builtin__',
                 'importlib', 'runpy', 'pty', 'shutil', 'socket', 'ctypes', 'code', 'pickle',
                 'marshal', 'types', 'webbrowser', 'multiprocessing', 'asyncio')
_CODE_BUILTINS = ('eval', 'exec', 'compile', '__import__', 'getattr', 'setattr', 'delattr',
                  'open', 'input', 'breakpoint', 'globals', 'locals', 'vars')


def refused_global(err: BaseException) -> str:
    """What a weights-only unpickler refused, from its error text: ``'the global posix.system
    (a code-execution primitive: unpickling it would run code)'``, or the reason itself."""
    text = str(err)
    m = re.search(r'GLOBAL (\S+?) (?:was not an allowed global|whose module \S+ is blocked)',
                  text)
    if not m:
        lines = [line.strip() for line in text.split('WeightsUnpickler error:', 1)[-1]
                 .splitlines() if line.strip() and not line.strip().startswith(
                     ('Weights only load failed', 'Check the documentation', '(1) ', '(2) '))]
        return lines[0].split(' Please use ')[0] if lines else type(err).__name__
    name = m.group(1)
    module, _, attr = name.rpartition('.')
    if module in ('', '__builtin__'):
        module = 'builtins'
    if module == 'commands':
        module = 'subprocess'
    shown = f'{module}.{attr}'
    if module.split('.')[0] in _CODE_MODULES and (module != 'builtins' or attr in _CODE_BUILTINS):
        return (f'the global {shown}, a code-execution primitive: unpickling it would run code '
                f'from the file')
    return f'the global {shown}, which is not a tensor, container or allowed type'


def describe_unreadable(path: str, err: BaseException, kind: str = 'torch') -> str:
    """Why ``path`` could not be read as a ``kind`` ('torch' or 'safetensors') file, naming it:
    empty, truncated, a Git LFS pointer or a web page instead of the weights, another format."""
    try:
        size = os.path.getsize(path)
        with open(path, 'rb') as f:
            head = f.read(64)
    except OSError as e:
        return f'{path} cannot be read ({e})'
    if osp.isdir(path):
        return f'{path} is a directory, not a {kind} file'
    if size == 0:
        return f'{path} is empty (0 bytes): a {kind} file that was never written or cut to nothing'
    if head.startswith(b'version https://git-lfs'):
        return (f'{path} is a Git LFS pointer ({size} bytes), not the weights: fetch them with '
                f'`git lfs pull`')
    if head.lstrip()[:1] == b'<' or head.lstrip()[:15].lower().startswith(b'<!doctype'):
        return f'{path} holds HTML or XML ({size} bytes), not weights: a failed download?'
    if kind == 'torch' and head.startswith(b'PK'):
        return (f'{path} is truncated or corrupt: a torch zip archive ({size} bytes) whose '
                f'directory is missing or damaged (an interrupted save or copy?) ({err})')
    if kind == 'torch' and len(head) > 8 and head[8:9] == b'{' and b'"' in head[8:]:
        return (f'{path} looks like a safetensors file, not a torch pickle: name it '
                f'*.safetensors')
    if kind == 'safetensors':
        if head.startswith(b'PK') or head[:1] == b'\x80':
            return (f'{path} is a torch (pickle) file, not safetensors: name it *.pth or '
                    f'*.bin')
        return (f'{path} is truncated or not a safetensors file ({size} bytes; '
                f'{type(err).__name__}: {err})')
    return (f'{path} is not a torch checkpoint, or is corrupt ({size} bytes; '
            f'{type(err).__name__}: {err})')


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not match the model."""


def _log(msg: str, level: int = logging.INFO) -> None:
    from mmengine.logging import print_log
    print_log(msg, logger='current', level=level)


def torch_load_safe(path: str, map_location='cpu'):
    """``torch.load(weights_only=True)`` with an error that names the file and says what was
    refused and why (a pickle that would run code), or that the file is empty, truncated or
    of another kind."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        detail = refused_global(e)
        if not detail.startswith('the global'):
            raise CheckpointError(describe_unreadable(path, e)) from None
        raise CheckpointError(
            f'Refused to load {path}: its pickle names {detail}. Only tensors and plain '
            f'containers are loaded (weights_only). If you trust its source, convert it once with '
            f'`python tools/model_converters/internvit2mmseg.py {path} OUT.safetensors '
            f'--trust-pickle` and load OUT.safetensors instead.') from None
    except (EOFError, RuntimeError, KeyError, ValueError, IndexError, UnicodeDecodeError,
            IsADirectoryError) as e:
        raise CheckpointError(describe_unreadable(path, e)) from None


def _read_safetensors(path: str) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        return load_file(path, device='cpu')
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(describe_unreadable(path, e, 'safetensors')) from None


def _read_index(index_path: str) -> StateDict:
    """The tensors of a sharded Hugging Face checkpoint: its index json's ``weight_map``
    (tensor name -> shard file in the same folder). Shards outside the folder, and shards
    whose tensors differ from what the map lists for them, are refused."""
    try:
        with open(index_path) as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f'{index_path}: not a valid index json ({e})') from None
    weight_map = index.get('weight_map') if isinstance(index, dict) else None
    if not weight_map or not isinstance(weight_map, dict) or \
            not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f'{index_path}: no "weight_map" of tensor names to shard files in '
                              f'the index json')
    folder = osp.dirname(osp.abspath(index_path))
    sd: StateDict = {}
    for shard in sorted(set(weight_map.values())):
        # By name (Hugging Face cache folders hold symlinks into ../../blobs, which is fine).
        shard_path = osp.normpath(osp.join(folder, shard))
        if osp.isabs(shard) or not shard_path.startswith(folder + os.sep):
            raise CheckpointError(f'{index_path}: shard {shard!r} lies outside the folder of '
                                  f'the index; refusing to read it')
        if not osp.isfile(shard_path):
            raise CheckpointError(f'{index_path}: shard {shard} is missing')
        part = _read_safetensors(shard_path) if shard.endswith('.safetensors') \
            else torch_load_safe(shard_path)
        listed = {k for k, v in weight_map.items() if v == shard}
        extra = sorted(set(part) - listed)
        absent = sorted(listed - set(part))
        if extra or absent:
            raise CheckpointError(
                f'{index_path}: shard {shard} does not hold what the weight_map lists for it '
                f'(not listed: {extra[:5]}{" ..." if len(extra) > 5 else ""}; listed but '
                f'absent: {absent[:5]}{" ..." if len(absent) > 5 else ""})')
        sd.update(part)
    return sd


def _check_finite(sd: StateDict, path: str) -> None:
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f'{path}: {len(bad)} tensors hold NaN or Inf ({", ".join(bad[:5])}'
                              f'{" ..." if len(bad) > 5 else ""}): these weights have diverged '
                              f'or are corrupt; refusing to load them')


def read_state_dict(path: str, trust_pickle: bool = False) -> StateDict:
    """Read the tensors of ``path`` (file or Hugging Face-style directory), unwrapping
    ``module`` / ``state_dict`` / ``model`` containers.

    ``trust_pickle=True`` (converter CLI only, on explicit request) allows a full unpickle.
    Every failure is a :class:`CheckpointError` naming the file: unreadable (empty, truncated,
    another format), a refused pickle (naming the global), no tensors, NaN or Inf values.
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
        obj = _read_index(path)
    elif path.endswith('.safetensors'):
        obj = _read_safetensors(path)
    elif trust_pickle:
        try:
            obj = torch.load(path, map_location='cpu', weights_only=False)
        except (EOFError, RuntimeError, KeyError, ValueError, IndexError,
                pickle.UnpicklingError) as e:
            raise CheckpointError(describe_unreadable(path, e)) from None
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
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f'{path}: holds no tensors (keys: {list(obj)[:5]})')
    _check_finite(sd, path)
    return sd


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
def resize_patch_kernel(weight: torch.Tensor, size: Tuple[int, int],
                        mode: str = 'bicubic') -> torch.Tensor:
    """Resize a (C_out, C_in, k, k) patch-embedding kernel to ``size``.

    ``'bicubic'``: plain ``F.interpolate`` (bicubic, align_corners=False, no rescaling), what
    the InternVL adapter and detection references do when 14 px weights meet a 16 px stem.
    ``'pinv'``: timm's ``resample_patch_embed`` (pseudo-inverse; keeps the patch tokens of a
    resized image), for other weights.
    """
    if mode == 'bicubic':
        return F.interpolate(weight.float(), size=tuple(size), mode='bicubic',
                             align_corners=False).to(weight.dtype)
    from timm.layers import resample_patch_embed
    return resample_patch_embed(weight.float(), list(size)).to(weight.dtype)


def _resample_to_model(model, sd: StateDict) -> None:
    """Fit the checkpoint to the model where the reference resizes on load: position
    embeddings of another grid are resampled once to the model's crop grid (``pos_grid``), a
    patch kernel of another size is resized (``model.patch_embed_resize``), and the cls token
    of a model without one is dropped."""
    pe = sd.get('pos_embed')
    if pe is not None and pe.shape != model.pos_embed.shape and pe.ndim == 3 \
            and pe.shape[-1] == model.pos_embed.shape[-1]:
        old = int(round((pe.shape[1] - 1) ** 0.5))
        if old * old == pe.shape[1] - 1:
            _log(f'resampling pos_embed from a {old}x{old} grid to the {model.pos_grid[0]}x'
                 f'{model.pos_grid[1]} grid of img_size {model.img_size}')
            sd['pos_embed'] = resample_abs_pos_embed(pe, model.pos_grid, (old, old))
    w = sd.get('patch_embed.proj.weight')
    target = model.patch_embed.proj.weight
    if w is not None and w.shape[:2] == target.shape[:2] and w.shape[2:] != target.shape[2:]:
        _log(f'resizing the patch_embed kernel from {tuple(w.shape[2:])} to '
             f'{tuple(target.shape[2:])} ({model.patch_embed_resize})')
        sd['patch_embed.proj.weight'] = resize_patch_kernel(w, tuple(target.shape[2:]),
                                                            model.patch_embed_resize)
    if getattr(model, 'cls_token', None) is None and 'cls_token' in sd:
        sd.pop('cls_token')
        _log('dropped the checkpoint\'s cls_token: this model runs without one '
             '(with_cls_token=False)')


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


# --------------------------------------------------------------------------- full checkpoints
# Task parts of a whole segmentor / detector checkpoint (the reference's released files, ours).
HEAD_PREFIXES = ('decode_head.', 'auxiliary_head.', 'neck.', 'rpn_head.', 'roi_head.')


def _strip_module(sd: StateDict) -> StateDict:
    """Drop a ``module.`` prefix (data-parallel wrappers) carried by every key."""
    while sd and all(k.startswith('module.') for k in sd):
        sd = {k[len('module.'):]: v for k, v in sd.items()}
    return sd


def is_full_checkpoint(sd: StateDict) -> bool:
    """Whether ``sd`` is a whole segmentor / detector (``backbone.*`` plus heads, or heads
    only), not backbone weights."""
    sd = _strip_module(sd)
    return any(k.startswith(HEAD_PREFIXES) or k.startswith(('backbone.up1.', 'backbone.up2.'))
               for k in sd)


def _is_linear_reference_head(sd: StateDict) -> bool:
    # The reference's linear head is its FCNHead with num_convs=0 and with_norm=True: a
    # BatchNorm named `norm`, then `conv_seg`; ours (InternViTLinearHead) names the norm `bn`.
    return 'decode_head.norm.weight' in sd and 'decode_head.conv_seg.weight' in sd and \
        not any(k.startswith(('decode_head.psp_modules.', 'decode_head.convs.')) for k in sd)


def convert_reference_checkpoint(sd: StateDict) -> Tuple[StateDict, dict]:
    """Convert a whole InternVL reference checkpoint to the names of our configs' models.

    ``sd`` is a state dict as released (bare, or already unwrapped from ``module`` /
    ``state_dict``; a ``module.`` key prefix is removed). Layouts, detected by their keys:

    * segmentation, plain ViT (InternVL ``segmentation/``, InternVL-MMDetSeg ``mmsegmentation/``):
      ``backbone.{patch_embed, cls_token, pos_embed, blocks.N}`` (our InternViT names already),
      the pyramid inside the backbone as ``backbone.up1.{0,1,3}`` / ``backbone.up2.0`` (our
      ``neck.stages.0.*`` / ``neck.stages.1.*``), ``decode_head.*`` (mmseg's UPerHead names, or
      the linear head's ``decode_head.norm.*``, our ``decode_head.bn.*``), ``auxiliary_head.*``;
    * detection, plain ViT (InternVL-MMDetSeg ``mmdetection/``, PIIP): the same backbone and
      pyramid, FPN as ``neck.*`` (our neck is ``[SimpleFeaturePyramid, FPN]``: ``neck.0.stages.*``
      and ``neck.1.*``), ``rpn_head.*``, ``roi_head.*`` unchanged;
    * ViT-Adapter (segmentation or detection): ``backbone.*`` are our ``InternViTAdapter``'s
      names, the heads are unchanged.

    Our own checkpoints of the same models pass through unchanged. Tensors keep their dtype
    (the releases are 16-bit; loading casts them to the model's).

    Returns:
        tuple[dict, dict]: the converted state dict, and what was found: ``layout``
        (``'segmentation'``, ``'detection'``, ``'adapter_segmentation'``,
        ``'adapter_detection'``), ``head`` (``'uper'``, ``'linear'``, ``'mask_rcnn'``),
        ``num_classes``, ``num_blocks`` (None when the file holds no ViT blocks, as the
        released frozen-backbone files), ``pos_grid`` (side of the ``pos_embed`` grid, or None).
    """
    sd = _strip_module(dict(sd))
    if not is_full_checkpoint(sd):
        raise CheckpointError(f'not a segmentor / detector checkpoint: no key starts with '
                              f'{", ".join(HEAD_PREFIXES)} (first keys: {list(sd)[:5]}); '
                              f'backbone weights convert with convert_to_internvit')
    detection = any(k.startswith(('rpn_head.', 'roi_head.')) for k in sd)
    adapter = any(k.startswith(('backbone.interactions.', 'backbone.spm.', 'backbone.level_embed'))
                  for k in sd)
    pyramid_in_backbone = any(k.startswith(('backbone.up1.', 'backbone.up2.')) for k in sd)
    pyramid = 'neck.0.stages.' if detection else 'neck.stages.'
    linear = _is_linear_reference_head(sd)
    out = {}
    for key, value in sd.items():
        new = key
        if not adapter and key.startswith('backbone.up1.'):
            new = pyramid + '0.' + key[len('backbone.up1.'):]
        elif not adapter and key.startswith('backbone.up2.'):
            new = pyramid + '1.' + key[len('backbone.up2.'):]
        elif detection and pyramid_in_backbone and key.startswith('neck.'):
            new = 'neck.1.' + key[len('neck.'):]
        elif linear and key.startswith('decode_head.norm.'):
            new = 'decode_head.bn.' + key[len('decode_head.norm.'):]
        if new in out:
            raise CheckpointError(f'{key} and another key both map to {new}')
        out[new] = value
    blocks = {int(m.group(1)) for k in out for m in [re.match(r'^backbone\.blocks\.(\d+)\.', k)]
              if m}
    pe = out.get('backbone.pos_embed')
    grid = int(round((pe.shape[1] - 1) ** 0.5)) if pe is not None and pe.ndim == 3 else None
    cls_w = out.get('decode_head.conv_seg.weight', out.get('roi_head.bbox_head.fc_cls.weight'))
    num_classes = None
    if cls_w is not None:
        num_classes = int(cls_w.shape[0]) - (1 if detection else 0)  # mmdet adds background
    info = dict(
        layout=('adapter_' if adapter else '') + ('detection' if detection else 'segmentation'),
        head='mask_rcnn' if detection else ('linear' if linear or 'decode_head.bn.weight' in out
                                            else 'uper'),
        num_classes=num_classes,
        num_blocks=max(blocks) + 1 if blocks else None,
        pos_grid=grid)
    return out, info
