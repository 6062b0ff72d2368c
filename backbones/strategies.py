"""MMEngine training strategies for training a 6B backbone on many GPUs (``FlexibleRunner``).

* :class:`FSDP2Strategy` (``strategy=dict(type='FSDP2Strategy', ...)``): PyTorch's FSDP2
  (``torch.distributed.fsdp.fully_shard``). Each module of a ``wrap_modules`` class (default: the
  InternViT :class:`~backbones.layers.Block`) becomes its own sharded parameter group, then the
  root takes the rest (stem, neck, heads). The optimizer is built *after* sharding from the
  sharded (DTensor) parameters, whose names do not change, so layer-wise lr decay groups and
  ``paramwise_cfg`` work as without sharding. Checkpoints are sharded
  (``torch.distributed.checkpoint``, one folder per checkpoint);
  :meth:`FSDP2Strategy.export_consolidated`, :class:`ExportConsolidatedHook` and
  :func:`consolidate_checkpoint` write the usual single-file ``{'meta', 'state_dict'}`` that
  ``mmengine.runner.load_checkpoint``, the plain ``Runner`` and ``tools/test.py`` load. Unlike
  FSDP1 it also runs on the CPU (gloo), which is how the tests check it.
* :class:`DeepSpeedZeroStrategy`: MMEngine's ``DeepSpeedStrategy`` (ZeRO stage 1/2/3) made to
  take our configs unchanged: the config's ``OptimWrapper``/``AmpOptimWrapper`` (with the
  layer-decay constructor) becomes a ``DeepSpeedOptimWrapper``, its ``clip_grad`` and
  ``accumulative_counts`` become DeepSpeed's ``gradient_clipping`` and
  ``gradient_accumulation_steps``, and the forward runs under bf16 autocast so that InternViT's
  float32 feature maps meet the bf16 heads. Without ``deepspeed`` it raises an ``ImportError``
  that says what to do.
* ``internvit_block_auto_wrap_policy`` (in MMEngine's ``FUNCTIONS``): auto-wrap policy at block
  granularity for MMEngine's own ``FSDPStrategy`` (FSDP1, CUDA only).

No mmseg/mmdet imports here.
"""
from __future__ import annotations

import contextlib
import copy
import datetime
import glob
import importlib
import importlib.util
import logging
import os
import os.path as osp
import pickle
import re
import tempfile
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine._strategy import DDPStrategy, DeepSpeedStrategy
from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper
from mmengine.config import Config, ConfigDict
from mmengine.device import get_device
from mmengine.dist import get_rank, init_dist, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, revert_sync_batchnorm
from mmengine.optim import BaseOptimWrapper
from mmengine.registry import FUNCTIONS, HOOKS, STRATEGIES
from torch.optim import Optimizer

from .engine import EXTRA_FILE, is_deepspeed_checkpoint, is_sharded_checkpoint
from .layers import Block

__all__ = ['FSDP2Strategy', 'DeepSpeedZeroStrategy', 'ExportConsolidatedHook',
           'build_mp_policy', 'shard_model', 'modules_to_shard', 'consolidate_checkpoint',
           'internvit_block_auto_wrap_policy', 'to_deepspeed_optim_wrapper',
           'is_sharded_checkpoint', 'init_dist_any_device']

_DTYPES = {'bfloat16': torch.bfloat16, 'bf16': torch.bfloat16, 'float16': torch.float16,
           'fp16': torch.float16, 'half': torch.float16, 'float32': torch.float32,
           'fp32': torch.float32, 'float': torch.float32}
_MP_KEYS = ('param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs')


def _log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


def _slurm_to_torch_env(port: Optional[int] = None) -> None:
    """The torchrun variables from slurm's, as MMEngine's slurm launcher sets them, minus its
    ``torch.cuda.set_device``: rank = SLURM_PROCID, world = SLURM_NTASKS, the first host of
    SLURM_NODELIST (``scontrol``) as master unless MASTER_ADDR is set, MASTER_PORT or 29500."""
    import subprocess
    env = os.environ
    env['RANK'] = env['SLURM_PROCID']
    env['WORLD_SIZE'] = env['SLURM_NTASKS']
    env['LOCAL_RANK'] = env.get('SLURM_LOCALID', env['SLURM_PROCID'])
    if 'MASTER_ADDR' not in env:
        env['MASTER_ADDR'] = subprocess.getoutput(
            f"scontrol show hostname {env['SLURM_NODELIST']} | head -n1").strip()
    if port is not None:
        env['MASTER_PORT'] = str(port)
    env.setdefault('MASTER_PORT', '29500')


def init_dist_any_device(launcher: str = 'pytorch', backend: str = 'nccl',
                         init_backend: str = 'torch', who: str = 'training', **kwargs) -> None:
    """MMEngine's ``init_dist``, usable without CUDA.

    MMEngine's ``pytorch`` and ``slurm`` launchers call ``torch.cuda.set_device`` whatever the
    backend, so a CPU run dies before the process group exists. Without a CUDA device this
    starts the group itself (slurm's variables turned into torchrun's): ``nccl`` becomes
    ``gloo`` (with a warning) and ``init_backend='deepspeed'`` goes through
    ``deepspeed.init_distributed``. With CUDA it is ``init_dist``.
    Does nothing when a process group already exists.
    """
    if is_distributed():
        return
    if torch.cuda.is_available():
        init_dist(launcher, backend, init_backend=init_backend, **kwargs)
        return
    if backend == 'nccl':
        _log(f'{who}: no CUDA device, using the gloo backend instead of nccl', logging.WARNING)
        backend = 'gloo'
    if launcher == 'slurm':
        _slurm_to_torch_env(kwargs.pop('port', None))
        launcher = 'pytorch'
    if launcher != 'pytorch':
        init_dist(launcher, backend, init_backend=init_backend, **kwargs)
        return
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    if init_backend == 'deepspeed':
        import deepspeed
        deepspeed.init_distributed(dist_backend=backend, **kwargs)
    else:
        dist.init_process_group(backend=backend, **kwargs)


def _dtype(value: Union[None, str, torch.dtype], what: str) -> Optional[torch.dtype]:
    if value is None or isinstance(value, torch.dtype):
        return value
    if isinstance(value, str) and value in _DTYPES:
        return _DTYPES[value]
    raise ValueError(f'{what}: unknown dtype {value!r}; use one of {sorted(_DTYPES)} or None')


# --------------------------------------------------------------------------- sharding
def build_mp_policy(cfg: Optional[dict]):
    """A ``MixedPrecisionPolicy`` from a config dict (dtypes as strings), or the no-op policy.

    Args:
        cfg (dict, optional): Keys ``param_dtype`` (dtype of the all-gathered parameters the
            forward/backward compute with, e.g. ``'bfloat16'``), ``reduce_dtype`` (dtype of the
            gradient reduce-scatter, e.g. ``'float32'``), ``output_dtype`` and
            ``cast_forward_inputs`` (bool). None: parameters stay in their stored dtype.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy
    if cfg is None:
        return MixedPrecisionPolicy()
    unknown = sorted(set(cfg) - set(_MP_KEYS))
    if unknown:
        raise ValueError(f'mixed precision: unknown keys {unknown}; expected some of '
                         f'{list(_MP_KEYS)}')
    return MixedPrecisionPolicy(
        param_dtype=_dtype(cfg.get('param_dtype'), 'param_dtype'),
        reduce_dtype=_dtype(cfg.get('reduce_dtype'), 'reduce_dtype'),
        output_dtype=_dtype(cfg.get('output_dtype'), 'output_dtype'),
        cast_forward_inputs=bool(cfg.get('cast_forward_inputs', True)))


def _resolve_wrap_classes(wrap_modules: Optional[Sequence[Union[str, type]]]
                          ) -> Tuple[Tuple[type, ...], Tuple[str, ...]]:
    """Classes and bare class names to shard on their own. Dotted strings are imported."""
    if wrap_modules is None:
        return (Block,), ()
    if isinstance(wrap_modules, (str, type)):
        wrap_modules = [wrap_modules]
    classes, names = [], []
    for item in wrap_modules:
        if isinstance(item, type):
            classes.append(item)
        elif isinstance(item, str) and '.' in item:
            module_name, _, cls_name = item.rpartition('.')
            try:
                classes.append(getattr(importlib.import_module(module_name), cls_name))
            except (ImportError, AttributeError) as e:
                raise ValueError(f'wrap_modules: cannot import {item!r} ({e})') from None
        elif isinstance(item, str):
            names.append(item)
        else:
            raise TypeError(f'wrap_modules entries must be classes or class names, got {item!r}')
    return tuple(classes), tuple(names)


def _matches(module: nn.Module, classes: Tuple[type, ...], names: Tuple[str, ...]) -> bool:
    return isinstance(module, classes) or type(module).__name__ in names


def modules_to_shard(model: nn.Module, wrap_modules: Optional[Sequence[Union[str, type]]] = None
                     ) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every submodule (not the root) of a ``wrap_modules`` class, in
    ``named_modules`` order (parents before children).

    Args:
        model (nn.Module): The model.
        wrap_modules (Sequence[str | type], optional): Classes, bare class names (matched
            against ``type(m).__name__``) or dotted import paths. None: InternViT's ``Block``.
    """
    classes, names = _resolve_wrap_classes(wrap_modules)
    return [(n, m) for n, m in model.named_modules() if n and _matches(m, classes, names)]


def shard_model(model: nn.Module, mesh=None,
                wrap_modules: Optional[Sequence[Union[str, type]]] = None,
                mixed_precision: Optional[dict] = None,
                root_mixed_precision: Optional[dict] = None,
                reshard_after_forward: bool = True) -> List[str]:
    """Apply ``fully_shard`` to each ``wrap_modules`` submodule (innermost first), then the root.

    Args:
        model (nn.Module): Model to shard in place (its class becomes an ``FSDPModule``).
        mesh (DeviceMesh, optional): 1-D data-parallel mesh; default: all ranks on the current
            device type.
        wrap_modules: See :func:`modules_to_shard`.
        mixed_precision (dict, optional): Policy of the wrapped modules, see
            :func:`build_mp_policy`.
        root_mixed_precision (dict, optional): Policy of the root group (everything outside
            the wrapped modules: stem, neck, heads). Default: none, so those stay float32 and
            receive InternViT's float32 maps as they do without sharding.
        reshard_after_forward (bool): True: free the gathered parameters after each module's
            forward and gather them again in backward (ZeRO-3 / ``FULL_SHARD``). False: keep
            them until backward (ZeRO-2-like ``SHARD_GRAD_OP``: less communication, more memory).

    Returns:
        list[str]: Names of the modules sharded on their own.
    """
    from torch.distributed.fsdp import fully_shard
    wrapped = modules_to_shard(model, wrap_modules)
    if not wrapped:
        _log(f'FSDP2: no submodule of {wrap_modules or ["Block"]} in '
             f'{type(model).__name__}; only the root is sharded', logging.WARNING)
    policy = build_mp_policy(mixed_precision)
    root_policy = build_mp_policy(root_mixed_precision)
    inside = {id(p) for _, m in wrapped for p in m.parameters()}
    groups = [(n, m.parameters()) for n, m in wrapped]
    groups.append(('the root group (parameters outside wrap_modules)',
                   (p for p in model.parameters() if id(p) not in inside)))
    for name, params in groups:
        dtypes = sorted({str(p.dtype) for p in params if p.requires_grad})
        if len(dtypes) > 1:  # frozen parameters may differ; trainable ones may not
            raise ValueError(
                f'FSDP2: the trainable parameters of {name} mix dtypes {dtypes}; one sharded '
                f'group reduces its gradients in one dtype. Keep trainable parameters in one '
                f'dtype, or list the modules holding the others in wrap_modules.')
    for _, module in reversed(wrapped):
        fully_shard(module, mesh=mesh, reshard_after_forward=reshard_after_forward,
                    mp_policy=policy)
    fully_shard(model, mesh=mesh, reshard_after_forward=reshard_after_forward,
                mp_policy=root_policy)
    return [n for n, _ in wrapped]


# What the ``.metadata`` pickle of a torch.distributed.checkpoint folder may name: DCP's own
# metadata classes, torch.Size, dtypes and layouts, paths. Anything else (os.system, eval, ...)
# is refused before it runs.
_DCP_METADATA_GLOBALS = {
    ('torch.distributed.checkpoint.filesystem', '_StorageInfo'),
    ('torch.distributed.checkpoint.planner', 'LoadItemType'),
    ('torch.distributed.checkpoint.planner', 'WriteItemType'),
    ('torch', 'Size'),
    ('torch.serialization', '_get_layout'),
    ('torch._utils', '_rebuild_tensor_v2'),
    ('collections', 'OrderedDict'),
    ('pathlib', 'PosixPath'),
    ('pathlib', 'PurePosixPath'),
    ('pathlib', 'WindowsPath'),
    ('pathlib', 'PureWindowsPath'),
}


class _DCPMetadataUnpickler(pickle.Unpickler):

    def __init__(self, file, path: str) -> None:
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str):
        if module == 'torch.distributed.checkpoint.metadata' or \
                (module, name) in _DCP_METADATA_GLOBALS or \
                (module == 'torch' and isinstance(getattr(torch, name, None), torch.dtype)):
            return super().find_class(module, name)
        raise pickle.UnpicklingError(
            f'{self.path} names {module}.{name}, which no torch.distributed.checkpoint metadata '
            f'holds: refusing to unpickle it (a crafted checkpoint could run code this way)')


@contextlib.contextmanager
def _dcp_errors(path: str):
    """torch.distributed.checkpoint reports failures as a ``CheckpointException``, a
    ``BaseException`` that ``except Exception`` does not catch: re-raise the first rank's error
    as an ordinary one naming ``path`` (``UnpicklingError`` for what the allow-list refused)."""
    from torch.distributed.checkpoint.api import CheckpointException
    try:
        yield
    except CheckpointException as e:
        failures = list(e.failures.values())
        message = str(failures[0][0]) if failures else str(e)
        cls = pickle.UnpicklingError if 'refusing to unpickle' in message else RuntimeError
        raise cls(f'reading the sharded checkpoint {path}: {message}') from None


def safe_dcp_reader(path: str):
    """A ``FileSystemReader`` for ``path`` that unpickles ``.metadata`` with an allow-list and
    refuses non-tensor entries (torch's reader uses ``pickle.load`` for the first and its
    default planner ``torch.load(weights_only=False)`` for the second; our checkpoints hold
    tensors only, their other state is in ``extra_state.pth``, read with ``weights_only``)."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import StorageMeta
    from torch.distributed.checkpoint.planner import LoadItemType

    class SafeFileSystemReader(FileSystemReader):

        def read_metadata(self, *args, **kwargs):
            meta_path = self._get_metadata_path(kwargs.get('rank'))
            with self.fs.create_stream(meta_path, 'rb') as f:
                metadata = _DCPMetadataUnpickler(f, str(meta_path)).load()
            if getattr(metadata, 'storage_meta', None) is None:
                metadata.storage_meta = StorageMeta()
            metadata.storage_meta.load_id = self.load_id
            return metadata

        def read_data(self, plan, planner):
            pickled = [item.dest_index.fqn for item in plan.items
                       if item.type == LoadItemType.BYTE_IO]
            if pickled:
                raise pickle.UnpicklingError(
                    f'{path} holds pickled (non-tensor) entries {pickled[:5]}: not written by '
                    f'FSDP2Strategy, refusing to unpickle them')
            return super().read_data(plan, planner)

    return SafeFileSystemReader(path)


def _atomic_torch_save(obj: Any, path: str) -> None:
    """``torch.save`` to a temporary file in the target folder, fsync, then rename into place."""
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=f'.{osp.basename(path)}.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide checkpoints from other users
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


def _load_extra(path: str) -> dict:
    from .safe_load import load_from_local_weights_only
    extra_file = osp.join(path, EXTRA_FILE)
    if not osp.isfile(extra_file):
        raise FileNotFoundError(
            f'{path} holds sharded tensors but no {EXTRA_FILE}: the save did not finish '
            f'(a crash while checkpointing?). Resume from an earlier checkpoint.')
    return load_from_local_weights_only(extra_file, map_location='cpu')


def consolidate_checkpoint(src: str, dst: str) -> dict:
    """Turn a sharded checkpoint folder into one mmengine checkpoint file.

    ``src`` is a folder written by :class:`FSDP2Strategy` (``torch.distributed.checkpoint``) or
    by :class:`DeepSpeedZeroStrategy` (DeepSpeed ZeRO 1/2/3; read with DeepSpeed's
    ``zero_to_fp32``). Runs in one process without GPUs or a process group, for any number of
    ranks that wrote ``src``, and keeps only the model tensors (not the optimizer state).
    ``dst`` gets ``{'meta': ..., 'state_dict': ...}`` (float32, the names of the unsharded
    model), which ``mmengine.runner.load_checkpoint``, the plain ``Runner`` and
    ``tools/test.py`` load.

    Note: the ``.metadata`` pickle of an FSDP2 folder is read through an allow-list of DCP's
    metadata classes (:func:`safe_dcp_reader`), but DeepSpeed's files are pickles that
    DeepSpeed loads with ``weights_only=False``: only consolidate DeepSpeed folders you (or
    someone you trust) wrote.

    Returns:
        dict: What was written.
    """
    if is_deepspeed_checkpoint(src):
        state_dict, meta = _read_deepspeed_folder(src)
    elif is_sharded_checkpoint(src):
        from torch.distributed.checkpoint.state_dict_loader import _load_state_dict_from_keys
        extra = _load_extra(src)
        with _dcp_errors(src):
            loaded = _load_state_dict_from_keys(keys={'state_dict'}, checkpoint_id=src,
                                                storage_reader=safe_dcp_reader(src))
        state_dict = {k: v.detach().cpu() for k, v in loaded['state_dict'].items()}
        meta = dict(extra.get('meta', {}))
    else:
        raise FileNotFoundError(
            f'{src} is not a sharded checkpoint folder (neither the .metadata of an FSDP2 '
            f'checkpoint nor the *model_states.pt of a DeepSpeed one)')
    meta['consolidated_from'] = osp.abspath(src)
    out = {'meta': meta, 'state_dict': state_dict}
    _atomic_torch_save(out, dst)
    return out


def _read_deepspeed_folder(src: str) -> Tuple[dict, dict]:
    """Float32 weights and MMEngine's ``meta`` of a DeepSpeed checkpoint folder (trusted)."""
    try:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    except ImportError as e:
        raise ImportError(f'{src} is a DeepSpeed checkpoint; reading it needs the deepspeed '
                          f'package ({e})') from e
    folder, tag = osp.split(osp.abspath(src))
    state_dict = get_fp32_state_dict_from_zero_checkpoint(folder, tag=tag)
    state_dict = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                  for k, v in state_dict.items()}
    model_states = sorted(glob.glob(osp.join(src, '*model_states.pt')))[0]
    # DeepSpeed keeps MMEngine's extra state (meta, message hub, schedulers) in this pickle
    # next to its own objects; DeepSpeed itself loads it the same way.
    client = torch.load(model_states, map_location='cpu', weights_only=False)
    # zero_to_fp32 rebuilds what the optimizer trained (and buffers); frozen parameters are
    # only in the module state DeepSpeed saved (in its low precision; empty under ZeRO-3
    # unless DeepSpeed kept their fragments).
    missing = []
    for key, value in (client.get('module') or {}).items():
        if key in state_dict or not torch.is_tensor(value):
            continue
        if value.numel() == 0:
            missing.append(key)
            continue
        state_dict[key] = value.detach().float().cpu() if value.is_floating_point() else value
    if missing:
        raise ValueError(f'{src}: no values for {", ".join(missing)} (frozen parameters of a '
                         f'ZeRO-3 checkpoint); export with ExportConsolidatedHook during '
                         f'training instead')
    return state_dict, dict(client.get('meta') or {})


def _read_full_checkpoint(filename: str) -> dict:
    """Read a single-file checkpoint on rank 0 (any path or URL MMEngine reads): every rank
    gets its non-tensor part, rank 0 also the ``state_dict`` (an empty dict elsewhere)."""
    from mmengine.runner.checkpoint import _load_checkpoint
    state_dict, checkpoint, error = {}, None, None
    if get_rank() == 0:
        try:
            checkpoint = _load_checkpoint(filename, map_location='cpu')
            if not isinstance(checkpoint, dict):
                raise TypeError(f'{filename}: expected a dict, got {type(checkpoint).__name__}')
            state_dict = checkpoint.pop('state_dict', None)
            if state_dict is None:  # a bare state dict
                state_dict, checkpoint = checkpoint, {}
            checkpoint.pop('optimizer', None)
        except Exception as e:  # the other ranks wait in the broadcast: tell them
            error = e
    box = [checkpoint, None if error is None else f'{type(error).__name__}: {error}']
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.broadcast_object_list(box, src=0)
    if error is not None:
        raise error
    if box[1] is not None:
        raise RuntimeError(f'rank 0 could not read {filename}: {box[1]}')
    checkpoint = box[0]
    checkpoint['state_dict'] = state_dict
    return checkpoint


def _revise_keys(state_dict: dict, revise_keys: Iterable[Tuple[str, str]]) -> dict:
    for pattern, repl in revise_keys:
        state_dict = {re.sub(pattern, repl, k): v for k, v in state_dict.items()}
    return state_dict


def check_state_dict(state_dict: dict, shapes: Dict[str, Tuple[int, ...]], strict: bool,
                     logger=None) -> Tuple[dict, Optional[str]]:
    """Keep the entries of ``state_dict`` that the model (``shapes``: name -> shape) can take.

    Unexpected keys and shape mismatches are dropped and, like missing keys, reported in the
    words of ``torch.nn.Module.load_state_dict``: with ``strict`` the report is returned as the
    error (the caller raises it on every rank), otherwise logged as a warning.

    Returns:
        tuple[dict, str | None]: The loadable entries and the error, if any.
    """
    unexpected = sorted(k for k in state_dict if k not in shapes)
    missing = sorted(k for k in shapes if k not in state_dict)
    mismatched = sorted(
        f'{k}: checkpoint {tuple(v.shape)}, model {shapes[k]}'
        for k, v in state_dict.items()
        if k in shapes and torch.is_tensor(v) and tuple(v.shape) != shapes[k])
    kept = {k: v for k, v in state_dict.items()
            if k in shapes and (not torch.is_tensor(v) or tuple(v.shape) == shapes[k])}
    report = []
    if unexpected:
        report.append(f'unexpected key in source state_dict: {", ".join(unexpected)}')
    if missing:
        report.append(f'missing keys in source state_dict: {", ".join(missing)}')
    if mismatched:
        report.append(f'size mismatch (not loaded): {"; ".join(mismatched)}')
    if report and strict:
        return kept, 'Error(s) in loading state_dict:\n' + '\n'.join(report)
    if report:
        (logger.warning if logger is not None else print)('\n'.join(report))
    return kept, None


class _ConsolidatedExport:
    """``export_consolidated`` for a strategy with a collective ``full_model_state_dict()``."""

    def export_consolidated(self, filename: str, meta: Optional[dict] = None) -> None:
        """Write the unsharded float32 model as one mmengine checkpoint file on rank 0
        (``{'meta': ..., 'state_dict': ...}``). Collective: every rank calls it."""
        state_dict = self.full_model_state_dict()
        if get_rank() == 0:
            meta = dict(meta or {})
            meta.setdefault('seed', self.seed)
            meta.setdefault('time', time.strftime('%Y%m%d_%H%M%S', time.localtime()))
            _atomic_torch_save({'meta': meta, 'state_dict': state_dict}, filename)
        dist.barrier()


# --------------------------------------------------------------------------- FSDP2
@STRATEGIES.register_module()
class FSDP2Strategy(_ConsolidatedExport, DDPStrategy):
    """Fully sharded data parallel training with FSDP2 (``torch.distributed.fsdp.fully_shard``).

    Use with ``runner_type = 'FlexibleRunner'`` (see ``configs/_base_/strategies/``)::

        strategy = dict(type='FSDP2Strategy',
                        mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'))

    Args:
        wrap_modules (Sequence[str | type], optional): Module classes sharded (all-gathered,
            freed, reduce-scattered) one at a time: classes, bare class names or dotted import
            paths. Default: InternViT's ``Block`` (``backbones.layers.Block``), which also covers
            the blocks inside ``InternViTAdapter``. Everything else forms the root group.
        mixed_precision (dict, optional): ``MixedPrecisionPolicy`` of the wrapped modules, e.g.
            ``dict(param_dtype='bfloat16', reduce_dtype='float32')``: the sharded parameters,
            gradients and optimizer states stay float32, the blocks compute in bf16, gradients
            are reduced in float32. None: no casting. An ``AmpOptimWrapper`` in the config is
            then redundant and is replaced by an ``OptimWrapper`` (logged).
        root_mixed_precision (dict, optional): Policy of the root group (stem, neck, heads);
            default none, so heads stay float32 as without sharding.
        reshard_after_forward (bool): True (``FULL_SHARD``, ZeRO-3): parameters are gathered
            again in backward. False (``SHARD_GRAD_OP``, ZeRO-2-like): gathered parameters are
            kept from forward to backward.
        sync_bn (str, optional): ``'torch'`` or ``'mmcv'`` to convert BatchNorm layers.
        **kwargs: :class:`mmengine._strategy.BaseStrategy` arguments (``work_dir``,
            ``env_kwargs``, ...). When no launcher started the processes, a one-process group is
            created so that a single process trains exactly as one rank does.

    InternViT's activation checkpointing (``with_cp=True``) composes with the sharding: the
    recomputation inside backward reuses the parameters gathered for backward.
    Checkpoints: ``save_checkpoint(filename)`` writes a folder ``filename`` with the sharded
    model and optimizer tensors (``torch.distributed.checkpoint``, which reshards on load: the
    number of ranks may change between save and resume) plus ``extra_state.pth`` (meta,
    message hub, schedulers, optimizer param groups; weights-only loadable). ``load_checkpoint`` (``load_from``) takes such a folder or any
    single-file checkpoint (read on rank 0 and broadcast); ``resume`` takes such a folder.
    """

    def __init__(self,
                 *,
                 wrap_modules: Optional[Sequence[Union[str, type]]] = None,
                 mixed_precision: Optional[dict] = None,
                 root_mixed_precision: Optional[dict] = None,
                 reshard_after_forward: bool = True,
                 sync_bn: Optional[str] = None,
                 **kwargs) -> None:
        if 'model_wrapper' in kwargs:
            raise TypeError('FSDP2Strategy does not take model_wrapper: it shards the model in '
                            'place with fully_shard (see wrap_modules / mixed_precision)')
        # Validate before BaseStrategy.__init__ sets up the process group.
        _resolve_wrap_classes(wrap_modules)
        build_mp_policy(mixed_precision)
        build_mp_policy(root_mixed_precision)
        if not isinstance(reshard_after_forward, bool):
            raise TypeError(f'reshard_after_forward must be a bool, got {reshard_after_forward!r}')
        super().__init__(sync_bn=sync_bn, **kwargs)
        self.wrap_modules = wrap_modules
        self.mixed_precision = copy.deepcopy(mixed_precision)
        self.root_mixed_precision = copy.deepcopy(root_mixed_precision)
        self.reshard_after_forward = reshard_after_forward

    # ------------------------------------------------------------------ setup
    def _setup_distributed(self, launcher: str = 'pytorch', backend: str = 'nccl',
                           **kwargs) -> None:
        init_dist_any_device(launcher, backend, who='FSDP2Strategy', **kwargs)

    def _device(self) -> torch.device:
        device = torch.device(get_device())
        if device.type == 'cuda' and device.index is None:
            device = torch.device('cuda', torch.cuda.current_device())
        return device

    def _wrap_model(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import FSDPModule
        if isinstance(model, FSDPModule):
            return model
        device = self._device()
        if not dist.is_initialized():
            # Launched without torchrun/slurm: one rank of its own, so that sharding, mixed
            # precision and checkpoints behave as on N ranks.
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo',
                                    store=dist.HashStore(), rank=0, world_size=1)
            self._rank, self._world_size = 0, 1
        model = self.convert_model(model)
        if device.type == 'cpu':  # SyncBatchNorm has no CPU implementation
            model = revert_sync_batchnorm(model)
        for module in model.modules():
            # fully_shard moves parameters and buffers but not the preprocessor's notion of
            # its device, which decides where the batch goes.
            if isinstance(module, BaseDataPreprocessor):
                module.to(device)
        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
        names = shard_model(model, mesh, self.wrap_modules, self.mixed_precision,
                            self.root_mixed_precision, self.reshard_after_forward)
        self.logger.info(
            f'FSDP2: sharded {len(names)} modules ({", ".join(names[:3])}'
            f'{", ..." if len(names) > 3 else ""}) and the root over {dist.get_world_size()} '
            f'{device.type} ranks; mixed_precision={self.mixed_precision}, '
            f'root_mixed_precision={self.root_mixed_precision}, '
            f'reshard_after_forward={self.reshard_after_forward}')
        return model

    def build_optim_wrapper(self, optim_wrapper: Union[Optimizer, BaseOptimWrapper, dict],
                            model: Optional[nn.Module] = None) -> BaseOptimWrapper:
        """Build the optimizer wrapper from the *sharded* model's parameters.

        It must be a config: an optimizer built beforehand holds the parameters that
        ``fully_shard`` has replaced. With ``mixed_precision`` set, an ``AmpOptimWrapper``
        config becomes an ``OptimWrapper`` (FSDP2 already computes in ``param_dtype``).
        """
        if isinstance(optim_wrapper, (Optimizer, BaseOptimWrapper)):
            raise TypeError('FSDP2Strategy builds the optimizer after sharding the model: pass '
                            'optim_wrapper as a config dict, not a built '
                            f'{type(optim_wrapper).__name__}')
        if isinstance(optim_wrapper, (dict, ConfigDict, Config)):
            optim_wrapper = copy.deepcopy(optim_wrapper)
            wrapper_type = optim_wrapper.get('type', 'OptimWrapper')
            if self.mixed_precision is not None and wrapper_type in ('AmpOptimWrapper',):
                dropped = {k: optim_wrapper.pop(k) for k in ('dtype', 'loss_scale', 'use_fsdp')
                           if k in optim_wrapper}
                optim_wrapper['type'] = 'OptimWrapper'
                self.logger.info(f'FSDP2Strategy: mixed precision comes from '
                                 f'{self.mixed_precision}; AmpOptimWrapper {dropped} replaced '
                                 f'by OptimWrapper')
        return super().build_optim_wrapper(optim_wrapper, model)

    # ------------------------------------------------------------------ state dicts
    def _optimizer(self) -> Optimizer:
        return self.optim_wrapper.optimizer

    def model_state_dict(self) -> dict:
        """Sharded model state dict (DTensor values, unchanged names)."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        return get_model_state_dict(self.model)

    def full_model_state_dict(self) -> dict:
        """Unsharded float32 model state dict on rank 0's CPU (empty on other ranks).
        Collective: every rank must call it."""
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             get_model_state_dict)
        state_dict = get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if dist.get_world_size() == 1:  # one CPU rank: those are the live parameters
            state_dict = {k: v.detach().clone() for k, v in state_dict.items()}
        return state_dict

    def optim_state_dict(self) -> dict:
        """Sharded optimizer state dict keyed by parameter name."""
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
        return get_optimizer_state_dict(self.model, self._optimizer())

    def load_model_state_dict(self, state_dict: dict, *, strict: bool = False,
                              revise_keys: list = [(r'^module.', '')]) -> None:  # noqa: B006
        """Load an unsharded state dict present on rank 0 (other ranks may pass ``{}``)."""
        self._load_full_model_state(state_dict, strict=strict, revise_keys=revise_keys)

    def load_optim_state_dict(self, state_dict: dict) -> None:
        """Load a sharded optimizer state dict as returned by :meth:`optim_state_dict`."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        set_optimizer_state_dict(self.model, self._optimizer(), state_dict)

    def _load_full_model_state(self, state_dict: Optional[dict], strict: bool,
                               revise_keys: Iterable[Tuple[str, str]]) -> None:
        """Rank 0's unsharded ``state_dict`` into the sharded model (broadcast from rank 0).

        Unexpected keys and shape mismatches are dropped and, like missing keys, reported as
        MMEngine's loader does; with ``strict=True`` any of them raises on every rank.
        """
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             set_model_state_dict)
        error = None
        if get_rank() == 0:
            shapes = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
            state_dict, error = check_state_dict(_revise_keys(dict(state_dict or {}), revise_keys),
                                                 shapes, strict, self.logger)
        else:
            state_dict = {}
        box = [error]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise RuntimeError(box[0])
        set_model_state_dict(
            self.model, state_dict,
            options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True,
                                     strict=False))

    # ------------------------------------------------------------------ saving
    def save_checkpoint(self, filename: str, *, save_optimizer: bool = True,
                        save_param_scheduler: bool = True, extra_ckpt: Optional[dict] = None,
                        callback: Optional[Callable] = None) -> None:
        """Write a sharded checkpoint folder ``filename``. Collective: every rank calls it.

        ``callback`` (the runner's ``before_save_checkpoint`` hooks) sees the whole checkpoint
        with the sharded ``state_dict`` and ``optimizer``; the tensors go to
        ``torch.distributed.checkpoint`` files, the rest to ``extra_state.pth`` (rank 0), written
        last so that its presence marks a complete checkpoint.
        """
        import mmengine
        import torch.distributed.checkpoint as dcp
        from mmengine.utils import get_git_hash

        from .safe_load import make_checkpoint_weights_only_safe
        if osp.isfile(filename):
            raise FileExistsError(f'{filename} is a file; FSDP2Strategy writes a checkpoint '
                                  f'folder there')
        checkpoint: Dict[str, Any] = {'state_dict': self.model_state_dict()}
        if save_optimizer and hasattr(self, 'optim_wrapper'):
            if self._optimizer().state:
                checkpoint['optimizer'] = self.optim_state_dict()
            else:  # no step yet: nothing to save (reading it would take a fake step)
                checkpoint['optimizer'] = {'state': {}, 'param_groups': None}
        if save_param_scheduler and hasattr(self, 'param_schedulers'):
            checkpoint['param_schedulers'] = self.scheduler_state_dict()
        extra_ckpt = dict(extra_ckpt or {})
        meta = dict(extra_ckpt.pop('meta', None) or {})
        meta.update(seed=self.seed, time=time.strftime('%Y%m%d_%H%M%S', time.localtime()),
                    mmengine=mmengine.__version__ + get_git_hash(),
                    world_size=dist.get_world_size(), strategy=type(self).__name__)
        checkpoint['meta'] = meta
        checkpoint.update(extra_ckpt)
        if callback is not None:
            callback(checkpoint)

        tensors = {'state_dict': checkpoint.pop('state_dict')}
        optimizer = checkpoint.pop('optimizer', None)
        if optimizer is not None:
            tensors['optimizer_state'] = optimizer['state']
            checkpoint['optimizer_param_groups'] = optimizer['param_groups']
            checkpoint['optim_wrapper_extra'] = self._optim_wrapper_extra()
        # Unsharded entries (buffers such as BatchNorm statistics, optimizer step counts) are
        # written from rank 0, as DDP checkpoints and export_consolidated do.
        dcp.save(tensors, checkpoint_id=filename,
                 planner=dcp.DefaultSavePlanner(dedup_save_to_lowest_rank=True))
        if get_rank() == 0:
            _atomic_torch_save(make_checkpoint_weights_only_safe(checkpoint),
                               osp.join(filename, EXTRA_FILE))
        dist.barrier()

    def _optim_wrapper_extra(self) -> dict:
        # What an OptimWrapper keeps besides its optimizer: the pseudo param group MMEngine
        # schedules and logs as base_lr, and an AmpOptimWrapper's loss scaler.
        extra = {}
        if getattr(self.optim_wrapper, 'base_param_settings', None) is not None:
            extra['base_param_settings'] = copy.deepcopy(self.optim_wrapper.base_param_settings)
        scaler = getattr(self.optim_wrapper, 'loss_scaler', None)
        if scaler is not None and hasattr(scaler, 'state_dict'):
            extra['loss_scaler'] = scaler.state_dict()
        return extra

    def _load_optim_wrapper_extra(self, extra: dict) -> None:
        if 'base_param_settings' in extra:
            self.optim_wrapper.base_param_settings = extra['base_param_settings']
        scaler = getattr(self.optim_wrapper, 'loss_scaler', None)
        if 'loss_scaler' in extra and scaler is not None:
            scaler.load_state_dict(extra['loss_scaler'])

    # ------------------------------------------------------------------ loading
    def _load_sharded(self, path: str, *, model: bool = True, optimizer: bool = False,
                      strict: bool = True) -> dict:
        """DCP-load the model (and optimizer) tensors of ``path`` in place."""
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import DefaultLoadPlanner
        from torch.distributed.checkpoint.state_dict import (get_optimizer_state_dict,
                                                             set_model_state_dict)
        target: Dict[str, Any] = {}
        if model:
            target['state_dict'] = self.model_state_dict()
        if optimizer:
            target['optimizer_state'] = get_optimizer_state_dict(
                self.model, self._optimizer())['state']
        with _dcp_errors(path):
            dcp.load(target, checkpoint_id=path, storage_reader=safe_dcp_reader(path),
                     planner=DefaultLoadPlanner(allow_partial_load=not strict))
        if model:
            set_model_state_dict(self.model, target['state_dict'])
        return target

    def load_checkpoint(self, filename: str, *, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')],  # noqa: B006
                        callback: Optional[Callable] = None) -> dict:
        """Load model weights (``load_from``): a sharded checkpoint folder, or a single-file
        checkpoint (``{'state_dict': ...}`` or a bare state dict; any path or URL MMEngine
        reads) read on rank 0 and broadcast to the shards."""
        self.logger.info(f'Load checkpoint from {filename}')
        if is_deepspeed_checkpoint(filename):
            raise ValueError(f'{filename} is a DeepSpeed checkpoint folder; FSDP2Strategy reads '
                             f'single files and its own folders: convert it with '
                             f'tools/model_converters/consolidate_checkpoint.py first')
        if is_sharded_checkpoint(filename):
            extra = _load_extra(filename)
            if callback is not None:
                callback(extra)
            self._load_sharded(filename, model=True, strict=strict)
            return extra
        checkpoint = _read_full_checkpoint(filename)
        if callback is not None:
            callback(checkpoint)
        self._load_full_model_state(checkpoint.pop('state_dict'), strict=strict,
                                    revise_keys=revise_keys)
        return checkpoint

    def resume(self, filename: str, *, resume_optimizer: bool = True,
               resume_param_scheduler: bool = True,
               map_location: Union[str, Callable] = 'default',
               callback: Optional[Callable] = None) -> dict:
        """Resume model, optimizer, schedulers and seed from a sharded checkpoint folder."""
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict
        self.logger.info(f'Resume checkpoint from {filename}')
        if not is_sharded_checkpoint(filename):
            raise ValueError(
                f'FSDP2Strategy resumes from the checkpoint folders it saves; {filename} is not '
                f'one. To start from a single-file checkpoint use load_from instead of resume.')
        extra = _load_extra(filename)
        if callback is not None:
            callback(extra)
        param_groups = extra.pop('optimizer_param_groups', None)
        with_optimizer = (resume_optimizer and hasattr(self, 'optim_wrapper')
                          and param_groups is not None)
        if resume_optimizer and hasattr(self, 'optim_wrapper') and param_groups is None:
            self.logger.warning(f'{filename} has no optimizer state; the optimizer starts fresh')
        target = self._load_sharded(filename, model=True, optimizer=with_optimizer, strict=True)
        if with_optimizer:
            set_optimizer_state_dict(self.model, self._optimizer(),
                                     {'state': target['optimizer_state'],
                                      'param_groups': param_groups})
            self._load_optim_wrapper_extra(extra.pop('optim_wrapper_extra', {}))
        if resume_param_scheduler and hasattr(self, 'param_schedulers'):
            self.load_scheduler_state_dict(extra.pop('param_schedulers'))

        meta = extra.setdefault('meta', {})
        resumed_seed = meta.get('seed')
        current_seed = self._randomness.get('seed')
        if resumed_seed is not None and resumed_seed != current_seed:
            if current_seed is not None:
                self.logger.warning(f'The value of random seed in the checkpoint '
                                    f'"{resumed_seed}" is different from the value in '
                                    f'`randomness` config "{current_seed}"')
            self._randomness.update(seed=resumed_seed)
            self._set_randomness(**self._randomness)
        if hasattr(self, 'optim_wrapper'):
            counts = getattr(self.optim_wrapper, '_accumulative_counts', 1)
            if counts > 1:
                if 'max_iters' not in self.dispatch_kwargs:
                    raise ValueError(f'"max_iters" must be specified because '
                                     f'"accumulative_counts" is {counts}')
                self.optim_wrapper.initialize_count_status(
                    self.model, meta.get('iter', 0), self.dispatch_kwargs['max_iters'])
        return extra


@HOOKS.register_module()
class ExportConsolidatedHook(Hook):
    """After training, write the unsharded model as one checkpoint file in the work dir.

    For :class:`FSDP2Strategy` and :class:`DeepSpeedZeroStrategy` runs (a no-op warning
    otherwise): the result loads with
    ``tools/test.py CONFIG work_dirs/.../FILENAME`` and the plain ``Runner``.

    Args:
        filename (str): File name inside ``runner.work_dir``.
    """

    priority = 'LOW'

    def __init__(self, filename: str = 'consolidated.pth') -> None:
        self.filename = filename

    def after_train(self, runner) -> None:
        strategy = getattr(runner, 'strategy', None)
        if not hasattr(strategy, 'export_consolidated'):
            runner.logger.warning('ExportConsolidatedHook needs FlexibleRunner with '
                                  'FSDP2Strategy or DeepSpeedZeroStrategy; nothing exported')
            return
        path = osp.join(runner.work_dir, self.filename)
        strategy.export_consolidated(path, meta=dict(iter=runner.iter, epoch=runner.epoch))
        runner.logger.info(f'consolidated model written to {path}')


# --------------------------------------------------------------------------- FSDP1 policy
@FUNCTIONS.register_module()
def internvit_block_auto_wrap_policy(module: nn.Module, recurse: bool, nonwrapped_numel: int,
                                     module_classes: Optional[Sequence[Union[str, type]]] = None
                                     ) -> bool:
    """FSDP1 auto-wrap policy (``auto_wrap_policy=dict(type='internvit_block_auto_wrap_policy')``
    in MMEngine's ``FSDPStrategy`` ``model_wrapper``): one FSDP unit per InternViT ``Block``
    (or per ``module_classes`` entry, as in :func:`modules_to_shard`)."""
    if recurse:
        return True
    classes, names = _resolve_wrap_classes(module_classes)
    return _matches(module, classes, names)


# --------------------------------------------------------------------------- DeepSpeed
def to_deepspeed_optim_wrapper(optim_wrapper: dict) -> Tuple[dict, dict]:
    """Split an ``OptimWrapper``/``AmpOptimWrapper`` config into a ``DeepSpeedOptimWrapper``
    config and the DeepSpeed config entries it implies.

    ``dtype`` (bfloat16/float16) becomes ``bf16``/``fp16`` ``enabled``, ``clip_grad.max_norm``
    becomes ``gradient_clipping``, ``accumulative_counts`` becomes
    ``gradient_accumulation_steps``; ``optimizer``, ``constructor`` and ``paramwise_cfg`` are
    kept, so layer-wise lr decay groups are built as usual.

    Returns:
        tuple[dict, dict]: The wrapper config and the DeepSpeed config overrides.
    """
    cfg = copy.deepcopy(dict(optim_wrapper))
    wrapper_type = cfg.pop('type', 'OptimWrapper')
    if wrapper_type not in ('OptimWrapper', 'AmpOptimWrapper', 'DeepSpeedOptimWrapper'):
        raise ValueError(f'DeepSpeedZeroStrategy: cannot convert optim_wrapper type '
                         f'{wrapper_type!r}; use OptimWrapper, AmpOptimWrapper or '
                         f'DeepSpeedOptimWrapper')
    ds: Dict[str, Any] = {}
    dtype = cfg.pop('dtype', None)
    dtype = _dtype(dtype, 'optim_wrapper.dtype') if isinstance(dtype, str) else dtype
    if dtype == torch.bfloat16:
        ds['bf16'] = dict(enabled=True)
    elif dtype == torch.float16:
        ds['fp16'] = dict(enabled=True)
    cfg.pop('loss_scale', None)
    cfg.pop('use_fsdp', None)
    clip = cfg.pop('clip_grad', None)
    if clip:
        if clip.get('type', 'norm') != 'norm' or 'max_norm' not in clip:
            raise ValueError(f'DeepSpeed clips by global norm only; got clip_grad={clip}')
        ds['gradient_clipping'] = float(clip['max_norm'])
    counts = cfg.pop('accumulative_counts', None)
    if counts:
        ds['gradient_accumulation_steps'] = int(counts)
    cfg['type'] = 'DeepSpeedOptimWrapper'
    return cfg, ds


def register_deepspeed_optimizers() -> List[str]:
    """Register the optimizers this DeepSpeed has in MMEngine's ``OPTIMIZERS`` (idempotent).

    MMEngine 0.10.7's own version imports ``deepspeed.runtime.fp16.onebit``, which DeepSpeed
    removed (0.19 has no 1-bit optimizers), so with a current DeepSpeed every
    ``DeepSpeedStrategy`` dies in its constructor; it also refuses a second registration.
    """
    from mmengine.registry import OPTIMIZERS
    names = []
    for module, classes in (('deepspeed.ops.adam', ('DeepSpeedCPUAdam', 'FusedAdam')),
                            ('deepspeed.ops.lamb', ('FusedLamb', )),
                            ('deepspeed.runtime.fp16.onebit',
                             ('OnebitAdam', 'OnebitLamb', 'ZeroOneAdam'))):
        try:
            mod = importlib.import_module(module)
        except ImportError:
            continue
        for name in classes:
            if getattr(mod, name, None) is not None:
                OPTIMIZERS.register_module(module=getattr(mod, name), force=True)
                names.append(name)
    return names


def _free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def _deepspeed_available() -> bool:
    return importlib.util.find_spec('deepspeed') is not None


class Float32PredictionsEngineWrapper(MMDeepSpeedEngineWrapper):
    """MMEngine's ``MMDeepSpeedEngineWrapper`` that returns float32 predictions.

    (The bf16 autocast is set on the model's ``forward`` by
    :meth:`DeepSpeedZeroStrategy._wrap_model`, inside the engine: DeepSpeed 0.19's engine turns
    off an autocast opened around it on CUDA unless its own ``torch_autocast`` mode, with
    float32 weights, is configured.)
    """

    def val_step(self, data):
        # DeepSpeed's bf16 model predicts in bf16, which metrics that go through numpy (COCO
        # boxes and masks, for one) cannot read
        return _half_to_float32(super().val_step(data))

    def test_step(self, data):
        return _half_to_float32(super().test_step(data))


def _autocast_forward(model: nn.Module, dtype: torch.dtype) -> None:
    """Run ``model.forward`` under ``torch.autocast(dtype)`` (an instance attribute: the
    parameter names and the state dict do not change)."""
    import functools
    forward = model.forward

    @functools.wraps(forward)
    def autocast_forward(*args, **kwargs):
        device_type = 'cuda' if torch.cuda.is_available() else 'cpu'
        with torch.autocast(device_type=device_type, dtype=dtype):
            return forward(*args, **kwargs)

    model.forward = autocast_forward


def _half_to_float32(obj):
    """bf16/fp16 tensors in ``obj`` (data samples, their instance/pixel data, lists, dicts)
    turned into float32, in place where ``obj`` is a data element; other tensors untouched."""
    from mmengine.structures import BaseDataElement
    if torch.is_tensor(obj):
        return obj.float() if obj.dtype in (torch.bfloat16, torch.float16) else obj
    if isinstance(obj, BaseDataElement):
        for key in list(obj.keys()):
            setattr(obj, key, _half_to_float32(obj.get(key)))
        return obj
    if isinstance(obj, (list, tuple)):
        return type(obj)(_half_to_float32(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _half_to_float32(v) for k, v in obj.items()}
    return obj


@STRATEGIES.register_module()
class DeepSpeedZeroStrategy(_ConsolidatedExport, DeepSpeedStrategy):
    """MMEngine's ``DeepSpeedStrategy`` for our configs (ZeRO stage 1, 2 or 3).

    Differences from the parent: the config's ``optim_wrapper`` is converted by
    :func:`to_deepspeed_optim_wrapper` (so a full-tuning config needs no DeepSpeed-specific
    optimizer section), ``train_micro_batch_size_per_gpu`` defaults to the train dataloader's
    batch size, the forward runs under autocast in the bf16/fp16 dtype (``autocast=True``), and
    a missing ``deepspeed`` package raises an ``ImportError`` naming the alternatives.

    Args:
        autocast (bool): Run the model's forward under ``torch.autocast`` when bf16 or fp16 is
            enabled. Default True.
        **kwargs: ``DeepSpeedStrategy`` arguments (``zero_optimization``, ``bf16``, ...).
    """

    def __init__(self, *, autocast: bool = True, **kwargs) -> None:
        if not _deepspeed_available():
            raise ImportError(
                'DeepSpeedZeroStrategy (configs/_base_/strategies/deepspeed_zero*.py) needs the '
                'deepspeed package, which is not installed. Install it on the CUDA machines '
                '(`pip install deepspeed`), or use FSDP2 instead: '
                'configs/_base_/strategies/fsdp2_full_shard.py / fsdp2_shard_grad_op.py.')
        import mmengine._strategy.deepspeed as mmengine_deepspeed
        stock = mmengine_deepspeed.register_deepspeed_optimizers
        mmengine_deepspeed.register_deepspeed_optimizers = register_deepspeed_optimizers
        try:
            super().__init__(**kwargs)
        finally:
            mmengine_deepspeed.register_deepspeed_optimizers = stock
        self.autocast = autocast

    def _setup_distributed(self, launcher: Optional[str] = None, backend: str = 'nccl',
                           **kwargs) -> None:
        init_dist_any_device(launcher or 'pytorch', backend, init_backend='deepspeed',
                             who='DeepSpeedZeroStrategy', **kwargs)

    def prepare(self, model, *, optim_wrapper=None, param_scheduler=None, compile=False,
                dispatch_kwargs=None):
        if dispatch_kwargs and 'train_micro_batch_size_per_gpu' in dispatch_kwargs:
            self.config.setdefault('train_micro_batch_size_per_gpu',
                                   dispatch_kwargs['train_micro_batch_size_per_gpu'])
        return super().prepare(model, optim_wrapper=optim_wrapper,
                               param_scheduler=param_scheduler, compile=compile,
                               dispatch_kwargs=dispatch_kwargs)

    def build_optim_wrapper(self, optim_wrapper, model=None):
        if isinstance(optim_wrapper, (dict, ConfigDict, Config)) and 'optimizer' in optim_wrapper:
            optim_wrapper, overrides = to_deepspeed_optim_wrapper(optim_wrapper)
            for key, value in overrides.items():
                if key in self.config and self.config[key] != value:
                    self.logger.warning(f'DeepSpeed config {key}={self.config[key]} kept; the '
                                        f'optim_wrapper implies {value}')
                self.config.setdefault(key, value)
        return super().build_optim_wrapper(optim_wrapper, model)

    # ------------------------------------------------------------------ weights
    # MMEngine's DeepSpeedStrategy loads only DeepSpeed folders (``load_from`` of a pretrained
    # single file fails), and writing into the module after ``deepspeed.initialize`` would be
    # undone by the first step: the optimizer keeps its own float32 master copy (partitioned
    # over the ranks). Both copies are set here, through DeepSpeed's public
    # ``safe_set_full_fp32_param`` / ``safe_get_full_fp32_param`` and ``GatheredParameters``.
    def _module(self) -> nn.Module:
        return self.model.model.module  # our wrapper -> DeepSpeedEngine -> the model

    @staticmethod
    def _is_zero3(param: torch.Tensor) -> bool:
        return hasattr(param, 'ds_id')

    def _named_tensors(self):
        """Parameters and persistent buffers: the entries of ``state_dict()``."""
        module = self._module()
        yield from module.named_parameters()
        for prefix, sub in module.named_modules():
            for name, buf in sub.named_buffers(prefix=prefix, recurse=False):
                if buf is not None and name.rsplit('.', 1)[-1] not in \
                        sub._non_persistent_buffers_set:
                    yield name, buf

    def _shape(self, tensor: torch.Tensor) -> Tuple[int, ...]:
        return tuple(tensor.ds_shape) if self._is_zero3(tensor) else tuple(tensor.shape)

    def load_checkpoint(self, filename: str, *, map_location: Union[str, Callable] = 'cpu',
                        strict: bool = False,
                        revise_keys: list = [(r'^module.', '')],  # noqa: B006
                        callback: Optional[Callable] = None) -> dict:
        """Load model weights (``load_from``): a DeepSpeed checkpoint folder (MMEngine's way),
        or a single-file checkpoint (a pretrained or consolidated model; any path or URL
        MMEngine reads), read on rank 0 and sent tensor by tensor to the other ranks, into
        both the bf16 model and the optimizer's float32 master weights."""
        if is_deepspeed_checkpoint(filename):
            return super().load_checkpoint(filename, map_location=map_location, strict=strict,
                                           revise_keys=revise_keys, callback=callback)
        if is_sharded_checkpoint(filename):
            raise ValueError(f'{filename} is an FSDP2 checkpoint folder; DeepSpeedZeroStrategy '
                             f'reads single files and DeepSpeed folders: convert it with '
                             f'tools/model_converters/consolidate_checkpoint.py first')
        self.logger.info(f'Load checkpoint from {filename}')
        checkpoint = _read_full_checkpoint(filename)
        if callback is not None:
            callback(checkpoint)
        self._load_full_model_state(checkpoint.pop('state_dict'), strict, revise_keys)
        return checkpoint

    @torch.no_grad()
    def _load_full_model_state(self, state_dict: dict, strict: bool,
                               revise_keys: Iterable[Tuple[str, str]]) -> None:
        import deepspeed
        from deepspeed.utils import safe_set_full_fp32_param, safe_set_local_fp32_param
        tensors = list(self._named_tensors())
        error, keys = None, None
        if get_rank() == 0:
            shapes = {name: self._shape(t) for name, t in tensors}
            state_dict, error = check_state_dict(_revise_keys(dict(state_dict), revise_keys),
                                                 shapes, strict, self.logger)
            keys = sorted(state_dict)
        box = [error, keys]
        dist.broadcast_object_list(box, src=0)
        if box[0] is not None:
            raise RuntimeError(box[0])
        keys = set(box[1])
        for name, tensor in tensors:
            if name not in keys:
                continue
            device = tensor.device
            if get_rank() == 0:
                value = state_dict[name].to(device=device, dtype=torch.float32)
            else:
                value = torch.empty(self._shape(tensor), dtype=torch.float32, device=device)
            dist.broadcast(value, src=0)
            if self._is_zero3(tensor):
                with deepspeed.zero.GatheredParameters([tensor], modifier_rank=0):
                    if get_rank() == 0:
                        tensor.data.copy_(value)
            else:
                tensor.data.copy_(value)
            if not (isinstance(tensor, nn.Parameter) and tensor.requires_grad):
                continue
            if self._is_zero3(tensor):
                # DeepSpeed 0.19's set_full_hp_param cuts the last rank's slice past the end
                # when the size does not divide by the ranks: set the local slice, padded.
                size = tensor.ds_tensor.numel()
                rank = tensor._z3_optimizer._get_param_partition_rank(tensor)
                local = value.new_zeros(size)
                chunk = value.flatten()[rank * size:(rank + 1) * size]
                local[:chunk.numel()] = chunk
                safe_set_local_fp32_param(tensor, local)
            else:
                safe_set_full_fp32_param(tensor, value)

    @torch.no_grad()
    def full_model_state_dict(self) -> dict:
        """The unsharded model (float32 master weights for trained parameters) on rank 0, an
        empty dict elsewhere. Collective: every rank calls it."""
        import deepspeed
        from deepspeed.utils import safe_get_full_fp32_param
        out = {}
        for name, tensor in self._named_tensors():
            value = None
            if isinstance(tensor, nn.Parameter) and tensor.requires_grad:
                value = safe_get_full_fp32_param(tensor)
            if value is None and self._is_zero3(tensor):
                with deepspeed.zero.GatheredParameters([tensor]):
                    value = tensor.data.clone()
            elif value is None:
                value = tensor.data
            if get_rank() == 0:
                out[name] = value.detach().float().cpu().clone()
        return out

    def _autocast_dtype(self) -> Optional[torch.dtype]:
        if not self.autocast:
            return None
        if self.config.get('bf16', {}).get('enabled'):
            return torch.bfloat16
        if self.config.get('fp16', {}).get('enabled'):
            return torch.float16
        return None

    def _wrap_model(self, model: nn.Module):
        import deepspeed
        if not dist.is_initialized():
            # Launched without torchrun/slurm: one rank of its own (DeepSpeed would otherwise
            # look for MPI), so that one GPU or the CPU trains like one rank of many.
            for key, value in (('RANK', '0'), ('LOCAL_RANK', '0'), ('WORLD_SIZE', '1'),
                               ('LOCAL_WORLD_SIZE', '1'), ('MASTER_ADDR', '127.0.0.1'),
                               ('MASTER_PORT', str(_free_port()))):
                os.environ.setdefault(key, value)
            deepspeed.init_distributed(
                dist_backend='nccl' if torch.cuda.is_available() else 'gloo')
            self._rank, self._world_size = 0, 1
        # DeepSpeed 0.19 casts only the parameters to bf16/fp16 and keeps buffers as loaded,
        # so a BatchNorm (ViT-Adapter stem, necks) meets bf16 weights with float32 running
        # statistics and fails; DeepSpeed 0.8, which the reference used, cast them too.
        half = 'bf16' if self.config.get('bf16', {}).get('enabled') else \
            'fp16' if self.config.get('fp16', {}).get('enabled') else None
        if half is not None:
            self.config.setdefault('data_types', {}).setdefault('buffer_dtype', half)
        dtype = self._autocast_dtype()
        if dtype is not None:
            _autocast_forward(model, dtype)
        if hasattr(self, 'optim_wrapper'):
            engine, self.optim_wrapper.optimizer, *_ = deepspeed.initialize(
                model=model, optimizer=self.optim_wrapper.optimizer, config=self.config)
        else:
            engine, *_ = deepspeed.initialize(model=model, config=self.config)
        return Float32PredictionsEngineWrapper(model=engine,
                                               inputs_to_half=self._inputs_to_half)
