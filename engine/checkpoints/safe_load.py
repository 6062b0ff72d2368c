"""MMEngine training checkpoints that ``torch.load(weights_only=True)`` accepts, and MMEngine
loading that uses it.

Since torch 2.6 ``torch.load`` defaults to ``weights_only=True``: it unpickles tensors, plain
containers and scalars, and refuses every other global instead of importing and calling it.
MMEngine 0.10.7 writes more than that into the checkpoints it saves; inspecting the pickle of a
tiny ``Runner`` run (``pickletools``) shows where each extra global comes from:

* ``message_hub.log_scalars`` holds :class:`~mmengine.logging.HistoryBuffer` objects
  (``GLOBAL mmengine.logging.history_buffer.HistoryBuffer`` + ``NEWOBJ`` + ``BUILD``), whose
  ``_log_history`` / ``_count_history`` are numpy arrays
  (``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype``).
* ``HistoryBuffer.__getstate__`` adds ``statistics_methods``: the class-level dict of the
  functions ``HistoryBuffer.min/max/current/mean``. ``torch.save`` pickles with protocol 2, where a
  function with a dotted ``__qualname__`` is written as ``getattr(HistoryBuffer, 'min')``: that is
  the ``builtins.getattr`` in the file. Allow-listing ``getattr`` would let a file reach any
  attribute of any allowed object, so we never do.
* ``message_hub.runtime_info['eta']`` is a numpy float64 (``LogProcessor`` computes it with
  numpy): ``numpy._core.multiarray.scalar``.
* Protocol 2 has no opcode for ``bytes``; the raw buffers of those numpy arrays and scalars are
  written as ``_codecs.encode(str, 'latin1')``. torch's weights-only unpickler already allows
  ``_codecs.encode`` (it only turns a string into bytes); we do not register it, and our own
  checkpoints no longer contain it.

Two complementary fixes:

* Saving: :class:`~engine.hooks.SafeCheckpointStateHook` (``before_save_checkpoint``) rewrites the state before
  it is written: each ``HistoryBuffer`` becomes a plain dict of two tensors and ``max_length``,
  numpy scalars become Python numbers, other numpy arrays become lists. The result needs no
  allow-listed global at all. ``after_load_checkpoint`` (and our loader) turn the dicts back into
  ``HistoryBuffer`` objects, so resumed runs keep their smoothed logs; an MMEngine without our
  code resumes such a checkpoint too, it only skips those log histories with a warning.
* Loading: :func:`register_mmengine_safe_globals` allow-lists exactly the types an unmodified
  MMEngine writes (so checkpoints trained elsewhere still load), and
  :func:`patch_mmengine_checkpoint_loading` makes MMEngine's ``CheckpointLoader`` (used by
  ``Runner.resume``, ``Runner.load_checkpoint``, ``load_checkpoint`` and ``init_cfg=Pretrained``)
  call ``torch.load(weights_only=True)`` explicitly, with an error naming the file when a pickle
  is refused. A pickle that would run code (for example an object whose ``__reduce__`` returns
  ``os.system``) is refused by every path.

No mmseg/mmdet imports here.
"""
from __future__ import annotations

import copy
import logging
import os
import os.path as osp
import pickle
import zipfile
from collections import OrderedDict
from typing import Any, Callable, List

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log

from backbones.checkpoint import CheckpointError, describe_unreadable, refused_global

from .atomic import atomic_write

__all__ = ['register_mmengine_safe_globals', 'patch_mmengine_checkpoint_loading',
           'make_checkpoint_weights_only_safe', 'restore_history_buffers',
           'load_from_local_weights_only', 'load_from_http_weights_only',
           'resave_weights_only_safe']


# Marks the plain-dict form of a HistoryBuffer inside ``message_hub.log_scalars``.
_HISTORY_BUFFER_TYPE = 'mmengine.HistoryBuffer'


# The statistics HistoryBuffer registers for itself (``_set_default_statistics``).
_DEFAULT_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_statistic(owner: Any, name: str) -> Callable:
    """Restricted stand-in for ``builtins.getattr`` while unpickling.

    Unmodified MMEngine checkpoints contain ``getattr(HistoryBuffer, 'min')`` (and ``max``,
    ``current``, ``mean``): the way pickle protocol 2 names the methods that
    ``HistoryBuffer.__getstate__`` stores. This resolves exactly those four and refuses anything
    else, so no other attribute of any object is reachable from a file. The functions it returns
    are not callable from the pickle (they are not allow-listed globals).
    """
    if owner is HistoryBuffer and name in _DEFAULT_STATISTICS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'refused getattr({getattr(owner, "__qualname__", type(owner).__name__)}, {name!r}): '
        f'only HistoryBuffer.{"/".join(_DEFAULT_STATISTICS)} may be looked up')


def _numpy_safe_globals() -> List[Any]:
    """The numpy types MMEngine's checkpoints reference, under numpy 2 and numpy 1 names."""
    core = getattr(np, '_core', None)
    multiarray = core.multiarray if core is not None else np.core.multiarray
    safe: List[Any] = [np.ndarray, np.dtype]
    for func in ('_reconstruct', 'scalar'):
        fn = getattr(multiarray, func)
        # Files written under numpy 1.x name them numpy.core.multiarray.*; numpy 2 renamed the
        # module to numpy._core: register the same functions under both names.
        safe += [(fn, f'numpy._core.multiarray.{func}'), (fn, f'numpy.core.multiarray.{func}')]
    # The dtype classes (numpy.dtypes.Float64DType, ...) appear when a dtype's class is pickled.
    safe += sorted({type(np.dtype(c)) for c in '?bhilqBHILQefdgFDG'}, key=str)
    return safe


def register_mmengine_safe_globals() -> List[Any]:
    """Allow-list, for ``torch.load(weights_only=True)``, exactly what MMEngine 0.10.7 writes into
    its training checkpoints beyond tensors and plain containers.

    That is ``HistoryBuffer``, numpy arrays, scalars and dtypes, ``collections.OrderedDict``
    (already allowed by torch), and a restricted stand-in registered under the name
    ``builtins.getattr`` that resolves only ``HistoryBuffer.min/max/current/mean`` (see
    :func:`_history_buffer_statistic`). The real ``builtins.getattr`` is never allowed, nor is
    ``_codecs.encode`` registered (torch allows it by default). Idempotent; returns the list
    registered (empty on a torch without ``add_safe_globals``, where only our own sanitised
    checkpoints load).
    """
    add = getattr(torch.serialization, 'add_safe_globals', None)
    if add is None:  # torch < 2.4
        print_log('this torch has no torch.serialization.add_safe_globals: only checkpoints '
                  'saved with SafeCheckpointStateHook load with weights_only=True',
                  logger='current', level=logging.WARNING)
        return []
    safe = [HistoryBuffer, OrderedDict, *_numpy_safe_globals(),
            (_history_buffer_statistic, 'builtins.getattr')]
    add(safe)
    return safe


def _tensor_or_list(arr: np.ndarray):
    if arr.dtype.kind in 'biufc':
        try:
            return torch.from_numpy(np.ascontiguousarray(arr)).clone()
        except TypeError:  # a dtype this torch cannot hold (e.g. uint32 on old torch)
            pass
    return arr.tolist()


def _history_buffer_to_dict(buf: HistoryBuffer) -> dict:
    log_history, count_history = buf.data
    return {'type': _HISTORY_BUFFER_TYPE, 'max_length': int(buf.max_length),
            'log_history': _tensor_or_list(np.asarray(log_history)),
            'count_history': _tensor_or_list(np.asarray(count_history))}


def _sanitise(obj: Any) -> Any:
    """The safe form of ``obj``; containers are copied only where something changes, so live
    state that the checkpoint dict references (scheduler lists, dataset metainfo) is never
    modified."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, HistoryBuffer):
        return _history_buffer_to_dict(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, dict):
        items = {k: _sanitise(v) for k, v in obj.items()}
        if all(items[k] is v for k, v in obj.items()):
            return obj
        new = copy.copy(obj)  # keeps OrderedDict, defaultdict, ConfigDict...
        new.update(items)
        return new
    if isinstance(obj, list):
        items = [_sanitise(v) for v in obj]
        return obj if all(a is b for a, b in zip(items, obj)) else items
    if type(obj) is tuple:  # not namedtuples: their class would need allow-listing anyway
        items = tuple(_sanitise(v) for v in obj)
        return obj if all(a is b for a, b in zip(items, obj)) else items
    return obj


def make_checkpoint_weights_only_safe(checkpoint: dict) -> dict:
    """Rewrite an MMEngine checkpoint dict so that it pickles without any global outside
    torch's default weights-only set.

    ``HistoryBuffer`` objects become ``{'type': 'mmengine.HistoryBuffer', 'max_length': int,
    'log_history': Tensor, 'count_history': Tensor}`` (undone by
    :func:`restore_history_buffers`); numpy scalars become Python numbers; any other numpy array
    becomes a (nested) list. Tensors are left alone. The top-level dict is updated in place (the
    hook's contract); nested containers that change are replaced by copies. Returns
    ``checkpoint``.
    """
    for key in list(checkpoint):
        checkpoint[key] = _sanitise(checkpoint[key])
    return checkpoint


def restore_history_buffers(checkpoint: Any) -> Any:
    """Turn the dict form of ``message_hub.log_scalars`` entries back into ``HistoryBuffer``
    objects, in place. Anything else is left as it is. Returns ``checkpoint``."""
    hub = checkpoint.get('message_hub') if isinstance(checkpoint, dict) else None
    scalars = hub.get('log_scalars') if isinstance(hub, dict) else None
    if not isinstance(scalars, dict):
        return checkpoint
    for key, value in scalars.items():
        if isinstance(value, dict) and value.get('type') == _HISTORY_BUFFER_TYPE:
            log, count = value['log_history'], value['count_history']
            scalars[key] = HistoryBuffer(
                log.numpy() if isinstance(log, torch.Tensor) else np.asarray(log),
                count.numpy() if isinstance(count, torch.Tensor) else np.asarray(count),
                max_length=int(value['max_length']))
    return checkpoint


def _refused(source: str, err: pickle.UnpicklingError) -> CheckpointError:
    detail = refused_global(err)
    if not detail.startswith('the global'):  # not a refused global: a file of another kind
        return CheckpointError(describe_unreadable(source, err))
    return CheckpointError(
        f'Refused to load checkpoint {source}: its pickle names {detail}. Only tensors, plain '
        f'containers and what MMEngine itself writes are loaded (weights_only). If you trust its '
        f'source, rewrite it once and use the copy: a training '
        f'checkpoint with `python -c "from engine.checkpoints.safe_load import resave_weights_only_safe; '
        f'resave_weights_only_safe(\'{source}\', \'OUT.pth\', trust_pickle=True)"`, backbone '
        f'weights with `python tools/model_converters/internvit2mmseg.py {source} '
        f'OUT.safetensors --trust-pickle`.')


def check_finite_state_dict(checkpoint: Any, source: str) -> None:
    """Refuse model weights holding NaN or Inf (a diverged run's checkpoint, a corrupt file),
    naming the file and the first tensors."""
    sd = checkpoint.get('state_dict', checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(sd, dict):
        return
    bad = [k for k, v in sd.items() if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f'{source}: {len(bad)} weight tensors hold NaN or Inf ({", ".join(bad[:5])}'
            f'{" ..." if len(bad) > 5 else ""}): the run that wrote it had diverged, or the file '
            f'is corrupt; refusing to load it')


def load_from_local_weights_only(filename: str, map_location=None, peek: bool = False):
    """Replacement for MMEngine's ``load_from_local``: ``torch.load(weights_only=True)`` with
    the MMEngine allow-list, HistoryBuffers restored, and a :class:`CheckpointError` naming the
    file when its pickle is refused (naming the global), when it is not a readable torch file
    (empty, truncated, safetensors, a Git LFS pointer ...) or when its weights hold NaN/Inf.
    ``peek=True`` memory-maps a zip-format file and skips the NaN/Inf check: the structure is
    read without the tensor data (for up-front checks)."""
    filename = osp.expanduser(filename)
    if osp.isdir(filename):
        raise CheckpointError(f'{filename} is a directory, not a checkpoint file')
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    register_mmengine_safe_globals()
    try:
        checkpoint = torch.load(filename, map_location=map_location, weights_only=True,
                                mmap=peek and zipfile.is_zipfile(filename))
    except pickle.UnpicklingError as e:
        raise _refused(filename, e) from None
    except (EOFError, RuntimeError, KeyError, ValueError, IndexError, UnicodeDecodeError) as e:
        raise CheckpointError(describe_unreadable(filename, e)) from None
    if not peek:
        check_finite_state_dict(checkpoint, filename)
    return restore_history_buffers(checkpoint)


def load_from_http_weights_only(filename: str, map_location=None, model_dir=None,
                                progress: bool = os.isatty(0)):
    """Replacement for MMEngine's ``load_from_http`` (download once per machine into torch's hub
    cache, rank 0 first) that unpickles with ``weights_only=True``."""
    from mmengine.dist import get_dist_info
    register_mmengine_safe_globals()

    def load():
        try:
            return torch.hub.load_state_dict_from_url(
                filename, model_dir=model_dir, map_location=map_location, progress=progress,
                weights_only=True)
        except pickle.UnpicklingError as e:
            raise _refused(filename, e) from None

    rank, world_size = get_dist_info()
    checkpoint = load() if rank == 0 else None
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            checkpoint = load()
    return restore_history_buffers(checkpoint)


def patch_mmengine_checkpoint_loading() -> None:
    """Make MMEngine load local and http(s) checkpoints with ``torch.load(weights_only=True)``.

    MMEngine 0.10.7's ``load_from_local`` calls ``torch.load(filename, map_location)`` without
    ``weights_only``: on torch >= 2.6 that means weights-only with torch's default allow-list
    (which refuses MMEngine's own ``HistoryBuffer``, so ``Runner.resume`` fails), and it can be
    turned off for the whole process by ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (or is off on
    torch < 2.6). We replace the loaders of the ``''`` (local path) and ``http(s)://`` schemes
    through MMEngine's own extension point, ``CheckpointLoader.register_scheme(..., force=True)``,
    with loaders that pass ``weights_only=True`` explicitly (the environment variable cannot undo
    an explicit argument), allow-list what MMEngine writes (:func:`register_mmengine_safe_globals`)
    and raise a :class:`CheckpointError` naming the file when a pickle is refused. Every
    ``Runner.resume``, ``Runner.load_checkpoint``, ``mmengine.runner.load_checkpoint`` and
    ``init_cfg=dict(type='Pretrained')`` goes through them. Other schemes (``open-mmlab://``,
    ``s3://``, ...) keep MMEngine's loaders and torch's default. Idempotent.
    """
    from mmengine.runner.checkpoint import CheckpointLoader
    register_mmengine_safe_globals()
    CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
    CheckpointLoader.register_scheme(prefixes=('http://', 'https://'),
                                     loader=load_from_http_weights_only, force=True)


def resave_weights_only_safe(src: str, dst: str, trust_pickle: bool = False) -> dict:
    """Rewrite the training checkpoint ``src`` as ``dst`` in the weights-only-safe form.

    ``src`` is read with ``weights_only=True`` (plus the MMEngine allow-list) unless
    ``trust_pickle=True``, which unpickles it fully: only for files from a source you trust.
    ``dst`` is written with :func:`~engine.checkpoints.atomic.atomic_write`.
    """
    if trust_pickle:
        try:
            checkpoint = torch.load(src, map_location='cpu', weights_only=False)
        except (EOFError, RuntimeError, KeyError, ValueError, IndexError) as e:
            raise CheckpointError(describe_unreadable(src, e)) from None
    else:
        checkpoint = load_from_local_weights_only(src, map_location='cpu')
    if isinstance(checkpoint, dict):
        make_checkpoint_weights_only_safe(checkpoint)
    atomic_write(dst, lambda f: torch.save(checkpoint, f))
    return checkpoint
