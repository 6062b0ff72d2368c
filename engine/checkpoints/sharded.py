"""Sharded checkpoint folders read safely and turned into one file.

* :func:`safe_dcp_reader`: a ``torch.distributed.checkpoint`` reader whose ``.metadata`` pickle
  goes through an allow-list of DCP's metadata classes and which refuses pickled entries.
* :func:`consolidate_checkpoint`: an FSDP2 or DeepSpeed folder -> one mmengine checkpoint file
  (``tools/model_converters/consolidate_checkpoint.py``).
"""
from __future__ import annotations

import contextlib
import glob
import io
import os.path as osp
import pickle
from typing import List, Optional, Tuple

import torch

from .atomic import _atomic_torch_save
from .formats import EXTRA_FILE, is_deepspeed_checkpoint, is_sharded_checkpoint
from .safe_load import load_from_local_weights_only, register_mmengine_safe_globals

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


def _load_extra(path: str) -> dict:
    extra_file = osp.join(path, EXTRA_FILE)
    if not osp.isfile(extra_file):
        raise FileNotFoundError(
            f'{path} holds sharded tensors but no {EXTRA_FILE}: the save did not finish '
            f'(a crash while checkpointing?). Resume from an earlier checkpoint.')
    return load_from_local_weights_only(extra_file, map_location='cpu')


def consolidate_checkpoint(src: str, dst: str, trust_pickle: bool = False) -> dict:
    """Turn a sharded checkpoint folder into one mmengine checkpoint file.

    ``src`` is a folder written by :class:`FSDP2Strategy` (``torch.distributed.checkpoint``) or
    by :class:`DeepSpeedZeroStrategy` (DeepSpeed ZeRO 1/2/3; read with DeepSpeed's
    ``zero_to_fp32``). Runs in one process without GPUs or a process group, for any number of
    ranks that wrote ``src``, and keeps only the model tensors (not the optimizer state).
    ``dst`` gets ``{'meta': ..., 'state_dict': ...}`` (float32, the names of the unsharded
    model), which ``mmengine.runner.load_checkpoint``, the plain ``Runner`` and
    ``tools/test.py`` load.

    Nothing in ``src`` can run code: the ``.metadata`` pickle of an FSDP2 folder is read through
    an allow-list of DCP's metadata classes (:func:`safe_dcp_reader`), DeepSpeed's files with
    ``weights_only=True`` and an allow-list of what DeepSpeed and MMEngine write there
    (:func:`_deepspeed_safe_globals`); a file naming anything else is refused, by name, before
    anything is unpickled, unless ``trust_pickle`` (DeepSpeed folders only).

    Returns:
        dict: What was written.
    """
    if is_deepspeed_checkpoint(src):
        state_dict, meta = _read_deepspeed_folder(src, trust_pickle)
    elif is_sharded_checkpoint(src):
        from torch.distributed.checkpoint.state_dict_loader import (
            _load_state_dict_from_keys,
        )
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


def _deepspeed_safe_globals() -> list:
    """What DeepSpeed 0.19 pickles into a checkpoint folder beyond tensors and containers.

    Found by saving ZeRO-1/2/3 folders with ``DeepSpeedZeroStrategy`` on 2 CPU processes and
    listing the pickles' globals (``pickletools``):

    * ``*_optim_states.pt``: the optimizer's loss scaler (``LossScaler``; ``DynamicLossScaler``
      under fp16), the ZeRO stage (``ZeroStageEnum``) and, for ZeRO 1/2, the slice mappings of
      the flat groups (``fragment_address``, a dataclass of two ints).
    * ``*_model_states.pt``: the module, ``param_shapes`` (``OrderedDict`` of ``torch.Size``) and
      the DeepSpeed config (plain), plus MMEngine's client state: ``meta``, ``message_hub``
      (``HistoryBuffer``, numpy arrays and scalars: :func:`register_mmengine_safe_globals`, as
      MMEngine's ``DeepSpeedStrategy`` ignores the save callback that sanitises them),
      ``param_schedulers`` and ``optim_wrapper`` (plain).

    None of these runs code when unpickled: the classes are instantiated without calling
    ``__init__`` and filled from plain state, the enum is looked up by value.
    """
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address
    from mmengine.config import ConfigDict
    # ConfigDict: the optimizer's param groups when MMEngine's constructor built them from a
    # config (a dict subclass, filled from plain state when unpickled)
    return [LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address, ConfigDict]


def check_deepspeed_files(src: str, files: Optional[List[str]] = None) -> None:
    """Refuse, by name and before anything is unpickled, a DeepSpeed folder whose pickles
    (``files``, default every ``*.pt`` of ``src``) name a global outside what DeepSpeed and
    MMEngine write (a static scan of each pickle; see :func:`_deepspeed_safe_globals`)."""
    from backbones.checkpoint import (
        CheckpointError,
        describe_unreadable,
        refused_global,
    )
    if files is None:
        files = sorted(glob.glob(osp.join(src, '*.pt')))
    register_mmengine_safe_globals()
    with torch.serialization.safe_globals(_deepspeed_safe_globals()):
        for path in files:
            try:
                unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
            except (ValueError, RuntimeError, EOFError, KeyError) as e:
                raise CheckpointError(describe_unreadable(path, e)) from None
            # torch lists the names as the file spells them; ours are registered under
            # their Python 3 names (the HistoryBuffer statistics look-up as builtins.getattr)
            unsafe = [g for g in unsafe if g != '__builtin__.getattr']
            if unsafe:
                described = '; '.join(refused_global(pickle.UnpicklingError(
                    f'GLOBAL {g} was not an allowed global')) for g in sorted(unsafe))
                raise CheckpointError(
                    f'Refused to read the DeepSpeed checkpoint folder {src}: {path} names '
                    f'{described}. DeepSpeed {_ds_version()} and MMEngine write none of '
                    f'these; nothing was unpickled. Only if you wrote this folder yourself '
                    f'(or trust who did), pass --trust-pickle.')


def _load_deepspeed_files(src: str, files: List[str], trust_pickle: bool) -> List[dict]:
    """Load the pickles of a DeepSpeed folder: with ``weights_only=True`` and the allow-list of
    :func:`_deepspeed_safe_globals` plus MMEngine's; every file is checked (statically, nothing
    unpickled) before any is loaded, and one naming anything else is refused, by name, unless
    ``trust_pickle``."""
    from backbones.checkpoint import (
        CheckpointError,
        describe_unreadable,
        refused_global,
    )
    safe = _deepspeed_safe_globals()
    if not trust_pickle:
        check_deepspeed_files(src, files)
    with torch.serialization.safe_globals(safe):
        out = []
        for path in files:
            try:
                out.append(torch.load(path, map_location='cpu', weights_only=not trust_pickle))
            except pickle.UnpicklingError as e:
                raise CheckpointError(f'Refused to read {path}: its pickle names '
                                      f'{refused_global(e)}. Only if you trust who wrote '
                                      f'{src}, pass --trust-pickle.') from None
            except (EOFError, RuntimeError, KeyError, ValueError, IndexError) as e:
                raise CheckpointError(describe_unreadable(path, e)) from None
    return out


def _ds_version() -> str:
    try:
        import deepspeed
        return deepspeed.__version__
    except ImportError:
        return '(not installed)'


def _read_deepspeed_folder(src: str, trust_pickle: bool = False) -> Tuple[dict, dict]:
    """Float32 weights and MMEngine's ``meta`` of a DeepSpeed ZeRO 1/2/3 checkpoint folder.

    DeepSpeed's own reader (``zero_to_fp32``) unpickles the folder's files with
    ``weights_only=False``: a crafted folder would run code. The files are loaded here with
    :func:`_load_deepspeed_files` (weights-only and an allow-list) and handed, already loaded,
    to ``zero_to_fp32``'s reconstruction of the flat float32 partitions."""
    try:
        from deepspeed.checkpoint import constants as C
        from deepspeed.utils import zero_to_fp32 as z
    except ImportError as e:
        raise ImportError(f'{src} is a DeepSpeed checkpoint; reading it needs the deepspeed '
                          f'package ({e})') from e
    model_files = sorted(glob.glob(osp.join(src, '*_model_states.pt')), key=z.natural_keys)
    optim_files = sorted(glob.glob(osp.join(src, '*_optim_states.pt')), key=z.natural_keys)
    if not optim_files:
        raise FileNotFoundError(f'{src}: no *_optim_states.pt (a DeepSpeed folder saved without '
                                f'its optimizer holds no float32 weights to consolidate)')
    model_states = _load_deepspeed_files(src, model_files, trust_pickle)
    optim_states = _load_deepspeed_files(src, optim_files, trust_pickle)
    for state in optim_states:
        state[C.OPTIMIZER_STATE_DICT].pop('optimizer_state_dict', None)  # moments: not needed
    osd = optim_states[0][C.OPTIMIZER_STATE_DICT]
    if C.ZERO_STAGE not in osd:
        raise ValueError(f'{optim_files[0]} is not a ZeRO checkpoint file')
    stage = int(osd[C.ZERO_STAGE])
    world_size = osd[C.PARTITION_COUNT]
    world_size = max(world_size) if isinstance(world_size, list) else world_size
    if world_size != len(optim_files):
        raise ValueError(f'{src}: {len(optim_files)} *_optim_states.pt files for a world size '
                         f'of {world_size} (a rank did not save, or an old save was overwritten)')
    if stage not in (1, 2, 3):
        raise ValueError(f'{src}: ZeRO stage {stage}; stages 1, 2 and 3 are supported')
    zero_model_states = []
    for path, state in zip(model_files, model_states):
        if C.BUFFER_NAMES not in state:
            raise ValueError(f'{path} is not a DeepSpeed model state file')
        zero_model_states.append(z.zero_model_state(
            buffers={k: v.float() if v.is_floating_point() else v
                     for k, v in state['module'].items() if k in state[C.BUFFER_NAMES]},
            param_shapes=state[C.PARAM_SHAPES],
            shared_params=[[k, v] for k, v in state['shared_params'].items()],
            ds_version=state.get(C.DS_VERSION),
            frozen_param_shapes=state.get(C.FROZEN_PARAM_SHAPES),
            frozen_param_fragments=state.get(C.FROZEN_PARAM_FRAGMENTS)))
    key = C.SINGLE_PARTITION_OF_FP32_GROUPS if stage <= 2 else C.FP32_FLAT_GROUPS
    flat_groups = [state[C.OPTIMIZER_STATE_DICT][key] for state in optim_states]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        # (zero_to_fp32 prints its progress)
        if stage <= 2:
            lazy = z._get_fp32_state_dict_from_zero2_checkpoint(
                world_size, flat_groups, zero_model_states, False,
                osd.get(C.PARAM_ALIGNMENT_PADDINGS))
        else:
            lazy = z._get_fp32_state_dict_from_zero3_checkpoint(
                world_size, flat_groups, zero_model_states, False)
        state_dict = z.to_torch_tensor(lazy)
    state_dict = {k: v.detach().float().cpu() if v.is_floating_point() else v.detach().cpu()
                  for k, v in state_dict.items()}
    client = model_states[0]
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
