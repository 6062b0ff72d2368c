"""DeepSpeed ZeRO (stage 1, 2 or 3) as an MMEngine strategy for our configs.

:class:`DeepSpeedZeroStrategy`: MMEngine's ``DeepSpeedStrategy`` made to take our configs
unchanged: the config's ``OptimWrapper``/``AmpOptimWrapper`` (with the layer-decay constructor)
becomes a ``DeepSpeedOptimWrapper``, its ``clip_grad`` and ``accumulative_counts`` become
DeepSpeed's ``gradient_clipping`` and ``gradient_accumulation_steps``, and the forward runs under
bf16 autocast so that InternViT's float32 feature maps meet the bf16 heads. Without
``deepspeed`` it raises an ``ImportError`` that says what to do.
"""
from __future__ import annotations

import copy
import importlib
import importlib.util
import os
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple, Union

import torch
import torch.distributed as dist
import torch.nn as nn
from mmengine._strategy import DeepSpeedStrategy
from mmengine._strategy.deepspeed import MMDeepSpeedEngineWrapper
from mmengine.config import Config, ConfigDict
from mmengine.dist import get_rank
from mmengine.registry import STRATEGIES

from ..checkpoints.formats import is_deepspeed_checkpoint, is_sharded_checkpoint
from ..checkpoints.sharded import check_deepspeed_files
from .base import (
    _ConsolidatedExport,
    _dtype,
    _read_full_checkpoint,
    _revise_keys,
    check_state_dict,
)
from .distributed import _free_port, init_dist_any_device


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
            # DeepSpeed unpickles its files with weights_only=False: scan them first
            check_deepspeed_files(filename)
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

    def resume(self, filename: str, **kwargs) -> dict:
        """MMEngine's resume of a DeepSpeed folder, whose pickles DeepSpeed loads with
        ``weights_only=False``: they are scanned first and a folder naming anything DeepSpeed
        and MMEngine do not write is refused by name before anything is unpickled."""
        if is_deepspeed_checkpoint(filename):
            check_deepspeed_files(filename)
        return super().resume(filename, **kwargs)

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
