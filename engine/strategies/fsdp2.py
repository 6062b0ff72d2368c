"""FSDP2 (``torch.distributed.fsdp.fully_shard``) as an MMEngine strategy.

:class:`FSDP2Strategy` (``strategy=dict(type='FSDP2Strategy', ...)``, with ``FlexibleRunner``):
each module of a ``wrap_modules`` class (default: the InternViT :class:`~backbones.layers.Block`)
becomes its own sharded parameter group, then the root takes the rest (stem, neck, heads). The
optimizer is built *after* sharding from the sharded (DTensor) parameters, whose names do not
change, so layer-wise lr decay groups and ``paramwise_cfg`` work as without sharding.
Checkpoints are sharded (``torch.distributed.checkpoint``, one folder per checkpoint);
``export_consolidated``, :class:`~engine.hooks.ExportConsolidatedHook` and
:func:`~engine.checkpoints.sharded.consolidate_checkpoint` write the usual single-file
``{'meta', 'state_dict'}`` that ``mmengine.runner.load_checkpoint``, the plain ``Runner`` and
``tools/test.py`` load. Unlike FSDP1 it also runs on the CPU (gloo), which is how the tests
check it.
"""
from __future__ import annotations

import copy
import logging
import os.path as osp
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine._strategy import DDPStrategy
from mmengine.config import Config, ConfigDict
from mmengine.device import get_device
from mmengine.dist import get_rank
from mmengine.logging import print_log
from mmengine.model import BaseDataPreprocessor, revert_sync_batchnorm
from mmengine.optim import BaseOptimWrapper
from mmengine.registry import STRATEGIES
from torch.optim import Optimizer

from ..checkpoints.atomic import _atomic_torch_save
from ..checkpoints.formats import (
    EXTRA_FILE,
    is_deepspeed_checkpoint,
    is_sharded_checkpoint,
)
from ..checkpoints.safe_load import make_checkpoint_weights_only_safe
from ..checkpoints.sharded import _dcp_errors, _load_extra, safe_dcp_reader
from .base import (
    _ConsolidatedExport,
    _dtype,
    _matches,
    _read_full_checkpoint,
    _resolve_wrap_classes,
    _revise_keys,
    check_state_dict,
)
from .distributed import init_dist_any_device

_MP_KEYS = ('param_dtype', 'reduce_dtype', 'output_dtype', 'cast_forward_inputs')


def _log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger='current', level=level)


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
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
        )
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
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
        )
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
        from torch.distributed.checkpoint.state_dict import (
            get_optimizer_state_dict,
            set_model_state_dict,
        )
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
