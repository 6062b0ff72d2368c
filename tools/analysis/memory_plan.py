"""Per-GPU memory plan of training a config under each distribution strategy.

    python tools/analysis/memory_plan.py CONFIG --gpus 8 [--strategy PIECE] [--gpu-mem 80]
        [--overhead 2] [--batch B] [--crop S]
    python tools/analysis/memory_plan.py --arch 6b --crop 504 --batch 2 --gpus 8 --gpu-mem 40

``--strategy`` (repeatable; default: all) takes the names of the strategy pieces in
``configs/_base_/strategies``, the names ``tools/train.py --strategy`` takes: ``ddp``,
``fsdp2_full_shard``, ``fsdp2_shard_grad_op``, ``fsdp1_full_shard``, ``deepspeed_zero1``,
``deepspeed_zero2``, ``deepspeed_zero3``; or the short aliases ``fsdp``, ``fsdp_sgo``, ``fsdp1``,
``zero1``, ``zero2``, ``zero3``. Each row names its piece; the piece a CONFIG trains with (its
``runner_type``/``strategy``) is marked ``(config)``.

For each strategy: weights, gradients, optimizer states, activations with and without activation
checkpointing, the totals on ``--gpus`` GPUs, whether they fit ``--gpu-mem`` GiB, and the smallest
GPU count that fits (with checkpointing). All sizes in GiB (2**30 bytes), per GPU.

Where the numbers come from:

* Parameters: the config's model (or ``--arch``'s InternViT) built on the meta device; trainable
  vs frozen (and ``frozen_dtype``) as configured; "block" = one InternViT ``Block``, "root" =
  everything else (stem, neck, heads), FSDP2's two kinds of shard groups.
* Activations of the backbone: the bytes autograd saves for one ``Block``, counted with
  ``saved_tensors_hooks`` on a real block of the arch's width (CPU, batch 1, 16, 32 and 48
  tokens, fitted as ``c + a*N + b*N**2`` per image, where ``c``, autocast's weight copies, is
  counted with the weights, and evaluated at the crop's token count), in the precision each
  strategy runs it in (``PRECISION``): bf16 weights and a bf16 residual stream (FSDP2's
  ``param_dtype``, DeepSpeed's bf16 mode), or float32 weights under bf16 autocast (DDP and FSDP1
  with ``AmpOptimWrapper``), where the residual stream stays float32 (the float32 cls token and
  position embeddings promote it). Without checkpointing every block keeps them; with it each
  block keeps its input (2 or 4 bytes per element) and one block at a time recomputes its
  activations in backward. Neck and heads (segmentation configs, when mmseg is installed): saved
  bytes of their forward on fake CPU tensors (``FakeTensorMode``: nothing is allocated, but
  ``torch.autocast`` applies), in float32 (FSDP2's root group) or under bf16 autocast (DDP,
  FSDP1, DeepSpeed), plus the upsampled logits and the cross-entropy; without them, the float32
  backbone maps only. CPU autocast stands in for CUDA's; their op lists differ in places (CUDA
  autocast runs e.g. softmax and layer_norm in float32), so under DDP and FSDP1 the naive
  attention and LayerNorm archs may save somewhat more on a GPU (not checked on one).
* The optimizer and the precision are the config's: ``optim_wrapper.optimizer.type`` gives the
  optimizer's float32 state bytes per trainable parameter (``OPTIMIZER_STATE_BYTES``: AdamW 8,
  SGD with momentum 4, without 0, ...), and ``optim_wrapper.type`` whether DDP and FSDP1 run
  under bf16 autocast (``AmpOptimWrapper``) or in float32 (``OptimWrapper``: no autocast copies,
  float32 activations). FSDP2 and DeepSpeed take their precision from the strategy. Without a
  config (``--arch``): AdamW under autocast.
* Strategies (below with AdamW, 8 B of state per trainable parameter), by piece (short alias):

  ===================  ===========================  ==========================  ================
  piece (alias)        weights                      gradients                   optimizer
  ===================  ===========================  ==========================  ================
  ddp                  fp32 + bf16 autocast copies  fp32 + fp32 DDP buckets     8 B/param
  fsdp2_full_shard     fp32 / N + 2 gathered bf16   fp32 / N + one block's      8 B/param / N
  (fsdp)               blocks + fp32 root           bf16 grad + fp32 reduce
                                                    buffer + fp32 root grads
  fsdp2_shard_grad_op  as fsdp, but every block's   as fsdp                     as fsdp
  (fsdp_sgo)           bf16 copy is kept
  fsdp1_full_shard     fp32 / N + 2 gathered fp32   fp32 / N + one block's      8 B/param / N
  (fsdp1)              blocks + one block's bf16    fp32 grads + the flat fp32
                       autocast copies + fp32 root  grad they are concatenated
                       + its bf16 autocast copies   into + fp32 root grads
  deepspeed_zero1      bf16                         bf16                        (4 master + 8) / N
  (zero1)
  deepspeed_zero2      bf16                         bf16 / N                    (4 master + 8) / N
  (zero2)
  deepspeed_zero3      bf16 / N + 2 gathered        bf16 / N                    (4 master + 8) / N
  (zero3)              blocks
  ===================  ===========================  ==========================  ================

  FSDP2 keeps its sharded float32 parameters as the master copy (``MixedPrecisionPolicy``
  ``param_dtype=bf16``, ``reduce_dtype=fp32``; the root group computes in float32, see
  ``engine/strategies/fsdp2.py``); DeepSpeed's bf16 mode keeps bf16 weights plus a float32 master
  shard. DDP's reducer keeps a float32 bucket copy of every gradient (MMEngine's
  ``MMDistributedDataParallel`` does not set ``gradient_as_bucket_view``).

  FSDP1 (MMEngine's ``FSDPStrategy``: ``FULL_SHARD``, one unit per block, ``use_orig_params``,
  no FSDP ``MixedPrecision``) shards float32 parameters, gradients and AdamW states over the N
  GPUs; bf16 comes from the config's ``AmpOptimWrapper`` (autocast), so the activations are
  DDP's (``PRECISION``). Assumed, in the same byte model:

  - Weights: two block units gathered in float32 at a time (the one computing and the one
    prefetched, by ``BACKWARD_PRE`` in backward or the all-gather limiter in forward); the root
    unit (stem, neck, heads) stays gathered from forward to backward (FSDP1 does not reshard the
    root after forward), as FSDP2's root group does.
  - Autocast's bf16 weight copies: under ``use_orig_params`` a unit's forward sees its
    parameters as views of the flat parameter, not leaves, so autocast does not cache their
    casts (it caches leaf parameters only, as under DDP): every use makes a bf16 copy, which
    the matmul saves for backward. One block's copies are counted with the weights (with
    checkpointing only the recomputing block holds them), the root's likewise (2 B per
    trainable parameter, as DDP's); without checkpointing every other block keeps its copies
    until its backward, counted with the activations (2 B per block parameter).
  - Gradients: a unit's float32 per-parameter gradients (autocast's bf16 gradients cast back)
    wait for the whole unit's backward, are concatenated into one flat float32 gradient (both
    live for a moment: 8 B per block parameter), which is reduce-scattered into the float32
    shard; the root's per-parameter gradients (heads first, stem last) wait until the end of
    backward (4 B per root parameter), as FSDP2's root gradients do.

Every term is summed, although gradients and the forward's activations never peak together (a
slight overestimate; ``tests/test_tools/test_memory_plan.py`` checks the DDP total against the
peak measured on the CPU for a step of the tiny demo config). Not counted: allocator
fragmentation, communication buckets of the sharded strategies beyond one block, ``foreach``
optimizer temporaries (one float32 copy of a parameter group's shard during ``step``), the input
batch and the dataloader, and ``--overhead`` GiB (default 2) added to every total for the CUDA
context, cuBLAS/NCCL workspaces.
"""
from __future__ import annotations

import argparse
import copy
import functools
import os.path as osp
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

GiB = 2 ** 30
STRATEGY_DIR = osp.join(osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))),
                        'configs', '_base_', 'strategies')
# The strategy pieces (configs/_base_/strategies/NAME.py, `tools/train.py --strategy NAME`), in
# the order of the table's rows.
STRATEGIES = ('ddp', 'fsdp2_full_shard', 'fsdp2_shard_grad_op', 'fsdp1_full_shard',
              'deepspeed_zero1', 'deepspeed_zero2', 'deepspeed_zero3')
ALIASES = {'fsdp': 'fsdp2_full_shard', 'fsdp_sgo': 'fsdp2_shard_grad_op',
           'fsdp1': 'fsdp1_full_shard', 'zero1': 'deepspeed_zero1', 'zero2': 'deepspeed_zero2',
           'zero3': 'deepspeed_zero3'}
STRATEGY_NAMES = {
    'ddp': 'DDP (bf16 autocast)', 'fsdp2_full_shard': 'FSDP2 full shard',
    'fsdp2_shard_grad_op': 'FSDP2 shard-grad-op',
    'fsdp1_full_shard': 'FSDP1 full shard (bf16 autocast)',
    'deepspeed_zero1': 'DeepSpeed ZeRO-1', 'deepspeed_zero2': 'DeepSpeed ZeRO-2',
    'deepspeed_zero3': 'DeepSpeed ZeRO-3'}
# Precision of the forward, per strategy: (InternViT blocks, neck and heads). 'bf16': bf16
# weights (FSDP2's param_dtype; DeepSpeed's bf16 mode casts the whole model); 'amp': float32
# weights under bf16 autocast (DDP and FSDP1 with AmpOptimWrapper; DeepSpeed's heads, whose bf16
# weights also run under autocast, save the same); 'fp32': FSDP2's float32 root group, no
# autocast.
PRECISION = {'ddp': ('amp', 'amp'), 'fsdp2_full_shard': ('bf16', 'fp32'),
             'fsdp2_shard_grad_op': ('bf16', 'fp32'), 'fsdp1_full_shard': ('amp', 'amp'),
             'deepspeed_zero1': ('bf16', 'amp'), 'deepspeed_zero2': ('bf16', 'amp'),
             'deepspeed_zero3': ('bf16', 'amp')}
BLOCK_PRECISIONS = ('bf16', 'amp', 'fp32')  # 'fp32': float32 weights, no autocast
AUTOCAST_STRATEGIES = ('ddp', 'fsdp1_full_shard')  # bf16 from the config's AmpOptimWrapper
# float32 state bytes per trainable parameter of torch's and MMEngine's optimizers (SGD and
# RMSprop: see optimizer_state_bytes); others are assumed to keep AdamW's two states
OPTIMIZER_STATE_BYTES = {
    'adam': 8, 'adamw': 8, 'nadam': 8, 'radam': 8, 'adamax': 8, 'lamb': 8, 'fusedadam': 8,
    'fusedlamb': 8, 'adadelta': 8, 'rprop': 8, 'asgd': 8, 'adan': 12, 'adagrad': 4,
    'adafactor': 4, 'lion': 4, 'sgd': 0, 'rmsprop': 4}
HEAD_PRECISIONS = ('fp32', 'amp')
# Strategies whose autocast cannot cache the bf16 copies of the blocks' weights (FSDP1 with
# use_orig_params: the forward sees views of the flat parameter), so every block's forward saves
# its own copies for backward (see the module docstring).
UNCACHED_BLOCK_CASTS = ('fsdp1_full_shard',)


def optimizer_state_bytes(optimizer) -> Tuple[str, int, Optional[str]]:
    """``(name, bytes, note)``: the optimizer of an ``optim_wrapper.optimizer`` config and the
    float32 state bytes it keeps per trainable parameter (note: why it is an assumption)."""
    optimizer = dict(optimizer or {})
    kind = optimizer.get('type', 'AdamW')
    name = kind if isinstance(kind, str) else getattr(kind, '__name__', str(kind))
    key = name.lower()
    if key == 'sgd':
        return name, 4 if optimizer.get('momentum', 0) else 0, None
    if key == 'rmsprop':
        return name, 4 + 4 * bool(optimizer.get('momentum', 0)) + \
            4 * bool(optimizer.get('centered', False)), None
    if key in OPTIMIZER_STATE_BYTES:
        return name, OPTIMIZER_STATE_BYTES[key], None
    return name, 8, f'optimizer {name}: state size unknown here, counted as AdamW\'s (8 B)'


def config_amp(cfg) -> bool:
    """Whether the config's ``optim_wrapper`` runs the forward under autocast."""
    wrapper = cfg.get('optim_wrapper') or {}
    return wrapper.get('type', 'OptimWrapper') in ('AmpOptimWrapper', 'DeepSpeedOptimWrapper')


def resolve_strategy(name: str) -> str:
    """The piece name of ``name``: a piece of ``STRATEGIES`` or a short alias (``ALIASES``)."""
    piece = ALIASES.get(name, name)
    if piece not in STRATEGIES:
        raise ValueError(f'strategy must be one of {STRATEGIES} or an alias of '
                         f'{tuple(ALIASES)}, got {name!r}')
    return piece


def _plain(value):
    return value.to_dict() if hasattr(value, 'to_dict') else value


@functools.lru_cache(maxsize=None)
def _piece_engine(name: str) -> tuple:
    """``(runner_type, strategy)`` of a strategy piece (``strategy`` as a plain dict)."""
    from mmengine.config import Config
    piece = Config.fromfile(osp.join(STRATEGY_DIR, f'{name}.py'))
    return piece.get('runner_type', 'Runner'), _plain(piece.get('strategy'))


def config_strategy(cfg) -> Tuple[Optional[str], bool]:
    """``(piece, exact)``: the strategy piece a config trains with, from its ``runner_type`` and
    ``strategy`` (what ``tools/train.py --strategy`` sets). ``exact``: they equal the piece's;
    otherwise ``piece`` is the row of the same engine and sharding (``None``: no row is)."""
    runner, strategy = cfg.get('runner_type', 'Runner'), _plain(cfg.get('strategy'))
    for name in STRATEGIES:
        if (runner, strategy) == _piece_engine(name):
            return name, True
    if not strategy:
        return ('ddp' if runner == 'Runner' else None), False
    kind = strategy.get('type')
    if kind == 'FSDP2Strategy':
        return ('fsdp2_full_shard' if strategy.get('reshard_after_forward', True)
                else 'fsdp2_shard_grad_op'), False
    if kind == 'FSDPStrategy':
        sharding = (strategy.get('model_wrapper') or {}).get('sharding_strategy', 'FULL_SHARD')
        return ('fsdp1_full_shard' if str(sharding).endswith('FULL_SHARD') else None), False
    if kind in ('DeepSpeedZeroStrategy', 'DeepSpeedStrategy'):
        stage = (strategy.get('zero_optimization') or {}).get('stage')
        return (f'deepspeed_zero{stage}' if stage in (1, 2, 3) else None), False
    return None, False


# --------------------------------------------------------------------------- model facts
@dataclass
class ModelFacts:
    """Parameter counts (by kind) and activation bytes of one training step, per GPU."""
    block_trainable: int = 0           # all InternViT blocks
    block_frozen: int = 0
    largest_block: int = 0             # one block (FSDP2 / ZeRO-3 gather unit)
    root_trainable: int = 0            # stem, neck, heads
    root_frozen: int = 0
    frozen_bytes: int = 4              # bytes per frozen parameter as stored
    optimizer: str = 'AdamW'           # the config's optimizer and its float32 state bytes
    optim_state_bytes: int = 8         # per trainable parameter
    amp: bool = True                   # DDP / FSDP1 under bf16 autocast (AmpOptimWrapper)
    num_blocks: int = 0
    # activation bytes by precision (keys of BLOCK_PRECISIONS / HEAD_PRECISIONS):
    block_act: Dict[str, float] = field(default_factory=dict)    # saved by one block's forward
    block_input: Dict[str, float] = field(default_factory=dict)  # one block's input (ckpt)
    other_act: Dict[str, float] = field(default_factory=dict)    # neck + heads + loss (or the
    notes: List[str] = field(default_factory=list)               # backbone's output maps)

    @property
    def trainable(self) -> int:
        return self.block_trainable + self.root_trainable

    @property
    def frozen(self) -> int:
        return self.block_frozen + self.root_frozen

    @property
    def total(self) -> int:
        return self.trainable + self.frozen

    def activations(self, checkpointing: bool, strategy: str) -> float:
        """Saved activation bytes of one step under ``strategy`` (its ``PRECISION``); for
        ``UNCACHED_BLOCK_CASTS`` without checkpointing, also the bf16 weight copies that the
        blocks other than the one in backward keep (the plan's weights hold that one's)."""
        strategy = resolve_strategy(strategy)
        blocks, heads = PRECISION[strategy]
        if strategy in AUTOCAST_STRATEGIES and not self.amp:
            blocks, heads = 'fp32', 'fp32'
        act, inp, other = self.block_act[blocks], self.block_input[blocks], self.other_act[heads]
        if checkpointing:
            return self.num_blocks * inp + act + other
        copies = 0
        if strategy in UNCACHED_BLOCK_CASTS and self.block_trainable > 0:
            copies = 2 * (self.block_trainable + self.block_frozen - self.largest_block)
        return self.num_blocks * act + other + copies


def saved_tensor_bytes(fn, exclude: Sequence[torch.Tensor] = ()) -> int:
    """Bytes of the distinct storages autograd saves while running ``fn()`` (works on meta
    tensors too); storages of ``exclude`` (parameters) are not counted."""
    skip = {t.untyped_storage()._cdata for t in exclude}
    seen: Dict[int, int] = {}
    alive = []  # keep every storage alive: a freed one's address could be reused by the next

    def pack(t):
        storage = t.untyped_storage()
        key = storage._cdata
        if key not in skip and key not in seen:
            seen[key] = storage.nbytes()
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def block_activation_fit(arch: dict, drop_path: float = 0.0, attn_impl: str = 'sdpa',
                         dtype: torch.dtype = torch.bfloat16,
                         precision: str = 'bf16') -> Tuple[float, float]:
    """``(a, b)`` such that one InternViT block saves ``a*N + b*N**2`` bytes per image of N
    tokens in training, measured on the CPU at N = 16, 32 and 48 (``b`` is 0 unless the attention
    keeps its N x N matrix, as the naive implementation does). ``precision='bf16'``: weights
    and input in ``dtype``; ``'amp'``: float32 weights and input under ``dtype`` autocast;
    ``'fp32'``: float32 weights and input, no autocast."""
    from backbones.layers import Block
    if precision not in BLOCK_PRECISIONS:
        raise ValueError(f'precision must be one of {BLOCK_PRECISIONS}, got {precision!r}')
    amp = precision == 'amp'
    autocast_dtype, dtype = dtype, (torch.float32 if precision != 'bf16' else dtype)
    with torch.device('meta'):
        block = Block(arch['embed_dims'], arch['num_heads'], arch['mlp_ratio'],
                      qkv_bias=arch['qkv_bias'], qk_norm=arch['qk_norm'],
                      norm_type=arch['norm_type'], layer_scale_init=arch['layer_scale_init'],
                      drop_path=drop_path, attn_impl=attn_impl)
    block = block.to_empty(device='cpu').to(dtype)
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(0, 0.02)
    block.train()
    params = list(block.parameters())

    def measure(n: int) -> int:
        x = torch.randn(1, n, arch['embed_dims'], dtype=dtype, requires_grad=True)

        def run():
            with torch.autocast('cpu', dtype=autocast_dtype, enabled=amp):
                block(x)
        return saved_tensor_bytes(run, exclude=params)

    # m(N) = c + a*N + b*N**2 through three token counts; the constant c is autocast's bf16
    # copies of the weights, saved for backward but counted with the weights (0 in bf16)
    d = 16
    m1, m2, m3 = (measure(n) for n in (d, 2 * d, 3 * d))
    b = (m3 - 2 * m2 + m1) / (2 * d * d)
    a = (m2 - m1) / d - b * 3 * d
    return a, max(b, 0.0)


def _crop_hw(crop) -> Tuple[int, int]:
    if isinstance(crop, int):
        return crop, crop
    return int(crop[0]), int(crop[1])


def _head_activation_bytes(model: nn.Module, feat_shapes: Sequence[Tuple[int, ...]],
                           crop_hw, batch: int) -> Dict[str, float]:
    """Saved bytes of neck + decode/auxiliary heads (+ upsampled logits and CE), by
    ``HEAD_PRECISIONS``, counted on fake CPU tensors (allocates nothing; autocast applies)."""
    import torch.nn.functional as F
    from mmengine.model import revert_sync_batchnorm
    from torch._subclasses.fake_tensor import FakeTensorMode
    parts = {name: getattr(model, name, None)
             for name in ('neck', 'decode_head', 'auxiliary_head')}
    parts = revert_sync_batchnorm(copy.deepcopy(  # the meta model stays as it was
        nn.ModuleDict({k: v for k, v in parts.items() if v is not None})))
    out = {}
    with FakeTensorMode(allow_non_fake_inputs=True):
        parts = parts.to_empty(device='cpu').train()
        params = list(parts.parameters())
        feats = tuple(torch.empty(shape, requires_grad=True) for shape in feat_shapes)
        heads = [parts['decode_head']] if 'decode_head' in parts else []
        aux = parts['auxiliary_head'] if 'auxiliary_head' in parts else None
        heads += list(aux) if isinstance(aux, nn.ModuleList) else [aux]

        def run(amp: bool):
            with torch.autocast('cpu', dtype=torch.bfloat16, enabled=amp):
                x = parts['neck'](feats) if 'neck' in parts else feats
                for head in heads:
                    if head is None:
                        continue
                    logits = head(x)
                    if isinstance(logits, torch.Tensor) and logits.dim() == 4:
                        up = F.interpolate(logits, size=crop_hw, mode='bilinear',
                                           align_corners=False)
                        labels = torch.zeros(batch, *crop_hw, dtype=torch.long)
                        F.cross_entropy(up, labels, ignore_index=255)

        for precision in HEAD_PRECISIONS:
            out[precision] = float(saved_tensor_bytes(lambda: run(precision == 'amp'),
                                                      exclude=params))
    return out


def facts_from_model(model: nn.Module, backbone: nn.Module, crop, batch: int,
                     heads: bool = True, optimizer=None, amp: bool = True) -> ModelFacts:
    """:class:`ModelFacts` of a (meta-device) model whose backbone is an InternViT, trained
    with ``optimizer`` (an ``optim_wrapper.optimizer`` config; default AdamW) and, for DDP and
    FSDP1, under bf16 autocast (``amp``) or in float32."""
    from backbones.layers import Block
    facts = ModelFacts(amp=amp)
    facts.optimizer, facts.optim_state_bytes, note = optimizer_state_bytes(optimizer)
    if note:
        facts.notes.append(note)
    blocks = [m for m in backbone.modules() if isinstance(m, Block)]
    in_blocks = {id(p) for b in blocks for p in b.parameters()}
    for p in model.parameters():
        kind = 'block' if id(p) in in_blocks else 'root'
        attr = f'{kind}_{"trainable" if p.requires_grad else "frozen"}'
        setattr(facts, attr, getattr(facts, attr) + p.numel())
        if not p.requires_grad:
            facts.frozen_bytes = p.element_size()
    facts.largest_block = max((sum(p.numel() for p in b.parameters()) for b in blocks),
                              default=0)
    facts.num_blocks = len(blocks)

    arch = backbone.arch_settings
    h, w = _crop_hw(crop)
    grid = (-(-h // backbone.patch_size), -(-w // backbone.patch_size))
    tokens = grid[0] * grid[1] + 1
    dpr = max((getattr(b.drop_path, 'drop_prob', 0.0) or 0.0) for b in blocks) if blocks else 0
    attn_impl = blocks[0].attn.attn_impl if blocks else 'sdpa'
    # residual stream: bf16 with bf16 weights, float32 under autocast (see the module docstring)
    stream_bytes = {'bf16': 2, 'amp': 4, 'fp32': 4}
    for precision in BLOCK_PRECISIONS:
        if precision == 'fp32' and amp:  # not needed: every row runs bf16 or autocast
            continue
        if getattr(backbone, 'frozen', False):  # no graph through a frozen backbone
            facts.block_act[precision] = facts.block_input[precision] = 0.0
            continue
        a, b = block_activation_fit(arch, drop_path=dpr, attn_impl=attn_impl,
                                    precision=precision)
        facts.block_act[precision] = batch * (a * tokens + b * tokens ** 2)
        facts.block_input[precision] = batch * tokens * arch['embed_dims'] * stream_bytes[
            precision]
    if getattr(backbone, 'frozen', False):
        facts.notes.append('frozen backbone: no backbone activations are kept for backward')
    map_shape = (batch, arch['embed_dims'], *grid)
    maps = [map_shape] * len(backbone.out_indices)
    head_bytes = None
    if heads and model is not backbone:
        try:
            head_bytes = _head_activation_bytes(model, maps, (h, w), batch)
        except Exception as e:  # noqa: BLE001 - an estimate; say why it is missing
            facts.notes.append(f'neck/head activations not measured ({type(e).__name__}: {e})')
    if head_bytes is None:
        maps_bytes = float(len(maps) * 4 * batch * arch['embed_dims'] * grid[0] * grid[1])
        head_bytes = {precision: maps_bytes for precision in HEAD_PRECISIONS}
        facts.notes.append('activations: backbone output maps only (neck/heads not counted)')
    facts.other_act = head_bytes
    if any(getattr(b, 'window_size', None) for b in blocks):
        facts.notes.append('window attention is counted as global attention')
    if type(backbone).__name__ == 'InternViTAdapter':
        facts.notes.append('adapter modules (spatial prior, injectors, extractors): parameters '
                           'counted, activations not')
    return facts


def facts_from_arch(arch, crop, batch: int, out_indices: Optional[Sequence[int]] = None,
                    drop_path_rate: float = 0.0, frozen: bool = False) -> ModelFacts:
    """:class:`ModelFacts` of a bare InternViT (no neck/heads)."""
    from backbones.intern_vit import InternViT, resolve_arch
    depth = resolve_arch(arch)['num_layers']
    if out_indices is None:  # the recipes' four evenly spaced blocks
        out_indices = [depth // 4 * (i + 1) - 1 for i in range(4)]
    with torch.device('meta'):
        backbone = InternViT(arch=arch, img_size=_crop_hw(crop), out_indices=out_indices,
                             drop_path_rate=drop_path_rate, frozen=frozen)
    facts = facts_from_model(backbone, backbone, crop, batch, heads=False)
    facts.notes.append(f'no config: InternViT {arch!r} alone, out_indices {list(out_indices)}')
    return facts


def facts_from_config(cfg, crop=None, batch: Optional[int] = None
                      ) -> Tuple[ModelFacts, tuple, int]:
    """:class:`ModelFacts`, crop and batch of a config (model built on the meta device)."""
    from mmengine.registry import MODELS, init_default_scope
    if crop is None:
        crop = cfg.get('crop_size') or cfg.model.get('data_preprocessor', {}).get('size')
    if crop is None:
        crop = cfg.model.backbone.get('img_size', 224)
    if batch is None:
        batch = cfg.get('train_dataloader', {}).get('batch_size', 1)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pop('pretrained', None)
    model_cfg.backbone.pop('init_cfg', None)
    model_cfg.pop('init_cfg', None)
    with torch.device('meta'):
        model = MODELS.build(model_cfg)
    facts = facts_from_model(model, model.backbone, crop, batch,
                             heads=cfg.get('default_scope', 'mmseg') == 'mmseg',
                             optimizer=(cfg.get('optim_wrapper') or {}).get('optimizer'),
                             amp=config_amp(cfg))
    return facts, _crop_hw(crop), batch


# --------------------------------------------------------------------------- strategies
@dataclass
class Plan:
    strategy: str
    gpus: int
    weights: float
    grads: float
    optim: float
    act_cp: float
    act_nocp: float
    overhead: float

    @property
    def total_cp(self) -> float:
        return self.weights + self.grads + self.optim + self.act_cp + self.overhead

    @property
    def total_nocp(self) -> float:
        return self.weights + self.grads + self.optim + self.act_nocp + self.overhead


def plan(facts: ModelFacts, strategy: str, gpus: int, overhead_gib: float = 2.0) -> Plan:
    """Per-GPU bytes of ``strategy`` (a piece or its alias) on ``gpus`` GPUs (see the module
    docstring)."""
    strategy = resolve_strategy(strategy)
    if gpus < 1:
        raise ValueError(f'gpus must be >= 1, got {gpus}')
    n = gpus
    t, f = facts.trainable, facts.frozen
    fb = facts.frozen_bytes
    blk = facts.largest_block
    root_all = facts.root_trainable + facts.root_frozen
    osb = facts.optim_state_bytes
    if strategy == 'ddp':
        # fp32 params + autocast's bf16 copies (none without AMP) + frozen
        weights = 4 * t + 2 * t * facts.amp + fb * f
        grads = 4 * t + 4 * t              # fp32 .grad + the reducer's fp32 buckets
        optim = osb * t
    elif strategy in ('fsdp2_full_shard', 'fsdp2_shard_grad_op'):
        gathered = (2 * (facts.block_trainable + facts.block_frozen)
                    if strategy == 'fsdp2_shard_grad_op' else 2 * 2 * blk)
        weights = (4 * t + fb * f) / n + gathered + 4 * root_all
        grads = 4 * t / n + (2 + 4) * blk * (facts.block_trainable > 0) \
            + 4 * facts.root_trainable
        optim = osb * t / n
    elif strategy == 'fsdp1_full_shard':
        # float32 shards; two gathered float32 block units and autocast's bf16 copies of the
        # one computing; the root unit gathered through the step, with its bf16 copies
        weights = (4 * t + fb * f) / n + 2 * 4 * blk + (2 * blk + 2 * facts.root_trainable) \
            * facts.amp + 4 * root_all
        # one unit's float32 per-parameter grads + the flat grad they are concatenated into
        grads = 4 * t / n + (4 + 4) * blk * (facts.block_trainable > 0) \
            + 4 * facts.root_trainable
        optim = osb * t / n
    else:
        total = t + f
        weights = 2 * total / n + 2 * 2 * blk if strategy == 'deepspeed_zero3' else 2 * total
        grads = 2 * t / n if strategy in ('deepspeed_zero2', 'deepspeed_zero3') else 2 * t
        optim = (4 + osb) * t / n  # float32 master shard + the optimizer's states
    return Plan(strategy, gpus, weights, grads, optim, facts.activations(True, strategy),
                facts.activations(False, strategy), overhead_gib * GiB)


def min_gpus(facts: ModelFacts, strategy: str, gpu_mem_gib: float, overhead_gib: float = 2.0,
             checkpointing: bool = True, limit: int = 4096) -> Optional[int]:
    """Smallest GPU count whose per-GPU total fits ``gpu_mem_gib`` (None: none up to
    ``limit``; sharding does not shrink activations or DDP's replicas)."""
    def fits(n: int) -> bool:
        p = plan(facts, strategy, n, overhead_gib)
        return (p.total_cp if checkpointing else p.total_nocp) <= gpu_mem_gib * GiB

    if not fits(limit):
        return None
    lo, hi = 1, limit  # per-GPU totals never grow with the GPU count: bisect
    while lo < hi:
        mid = (lo + hi) // 2
        if fits(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def format_table(facts: ModelFacts, strategies: Sequence[str], gpus: int, gpu_mem: float,
                 overhead: float = 2.0, config_piece: Optional[str] = None) -> str:
    """A markdown table, one row per strategy (sizes in GiB per GPU); the second column names
    the strategy piece, ``(config)`` marking ``config_piece``."""
    head = ['strategy', 'piece', 'weights', 'grads', 'optimizer', 'act (ckpt)', 'act (no ckpt)',
            f'total (ckpt), {gpus} GPUs', f'total (no ckpt), {gpus} GPUs',
            f'fits {gpus}x{gpu_mem:g} GiB', f'min GPUs at {gpu_mem:g} GiB (ckpt)']
    rows = []
    for s in strategies:
        s = resolve_strategy(s)
        p = plan(facts, s, gpus, overhead)
        fits_cp = p.total_cp <= gpu_mem * GiB
        fits_no = p.total_nocp <= gpu_mem * GiB
        fits = 'yes' if fits_no else ('with ckpt' if fits_cp else 'no')
        need = min_gpus(facts, s, gpu_mem, overhead)
        piece = f'{s} (config)' if s == config_piece else s
        name = STRATEGY_NAMES[s]
        if s in AUTOCAST_STRATEGIES and not facts.amp:
            name = name.replace('bf16 autocast', 'float32')
        rows.append([name, piece] + [f'{v / GiB:.1f}' for v in (
            p.weights, p.grads, p.optim, p.act_cp, p.act_nocp, p.total_cp, p.total_nocp)]
            + [fits, str(need) if need else 'never'])
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '|'.join('---' for _ in head) + '|']
    lines += ['| ' + ' | '.join(r) + ' |' for r in rows]
    return '\n'.join(lines)


def describe(facts: ModelFacts, crop_hw, batch: int, overhead: float,
             config_piece: Tuple[Optional[str], bool] = (None, True)) -> str:
    m = 1e9
    lines = [
        f'parameters: {facts.total / m:.3f} B ({facts.trainable / m:.3f} B trainable, '
        f'{facts.frozen / m:.3f} B frozen); blocks '
        f'{(facts.block_trainable + facts.block_frozen) / m:.3f} B '
        f'in {facts.num_blocks} blocks of {facts.largest_block / 1e6:.1f} M; '
        f'root (stem, neck, heads) {(facts.root_trainable + facts.root_frozen) / m:.3f} B',
        f'per GPU: batch {batch}, crop {crop_hw[0]}x{crop_hw[1]}; one block saves '
        f'{facts.block_act["bf16"] / GiB:.2f} GiB in bf16, '
        f'{facts.block_act["amp"] / GiB:.2f} GiB with float32 weights under autocast; '
        f'neck/heads/outputs {facts.other_act["fp32"] / GiB:.2f} GiB in float32, '
        f'{facts.other_act["amp"] / GiB:.2f} GiB under autocast; '
        f'totals include {overhead:g} GiB overhead',
        f'optimizer: {facts.optimizer}, {facts.optim_state_bytes} B of float32 state per '
        f'trainable parameter; ddp and fsdp1_full_shard run '
        + ('bf16 autocast (AmpOptimWrapper)' if facts.amp else
           'float32, no autocast (OptimWrapper)')]
    piece, exact = config_piece
    if piece:
        lines.append(f'strategy of the config: {piece}' + ('' if exact else (
            f' (modified: its settings differ from configs/_base_/strategies/{piece}.py)')))
    lines += [f'note: {n}' for n in facts.notes]
    return '\n'.join(lines)


def _strategy_arg(name: str) -> str:
    try:
        return resolve_strategy(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Per-GPU memory plan of training a config under each distribution strategy '
                    '(weights, gradients, optimizer states, activations with and without '
                    'activation checkpointing), with the smallest GPU count that fits. The '
                    'optimizer and the precision are read from the config.')
    p.add_argument('config', nargs='?', help='training config (or use --arch)')
    p.add_argument('--gpus', type=int, default=8, help='GPUs to plan for (default 8)')
    p.add_argument('--strategy', type=_strategy_arg, action='append', metavar='PIECE',
                   help=f'only these strategies (repeatable; default: all): the pieces '
                   f'{", ".join(STRATEGIES)} (as tools/train.py --strategy) or the aliases '
                   f'{", ".join(ALIASES)}')
    p.add_argument('--gpu-mem', type=float, default=80.0, help='GiB per GPU (default 80)')
    p.add_argument('--overhead', type=float, default=2.0,
                   help='GiB per GPU added for the CUDA context and workspaces')
    p.add_argument('--arch', default=None, help="InternViT arch without a config, e.g. '6b'")
    p.add_argument('--crop', type=int, nargs='+', default=None, metavar='H [W]',
                   help="crop size (default: the config's crop_size; 224 with --arch)")
    p.add_argument('--batch', type=int, default=None,
                   help="images per GPU (default: the config's train batch size; 2 with --arch)")
    p.add_argument('--drop-path', type=float, default=0.4,
                   help='drop-path rate of the --arch model (default 0.4)')
    from tools._threads import add_threads_argument
    add_threads_argument(p)
    return p.parse_args(argv)


def main(argv=None) -> str:
    args = parse_args(argv)
    from tools._threads import prepare_process
    prepare_process(args.threads)
    crop = None if args.crop is None else (args.crop * 2)[:2]
    if args.config:
        if not osp.isfile(args.config):
            sys.exit(f'error: config file not found: {args.config}')
        from mmengine.config import Config
        cfg = Config.fromfile(args.config)
        facts, crop_hw, batch = facts_from_config(cfg, crop, args.batch)
        title = osp.basename(args.config)
        config_piece = config_strategy(cfg)
    elif args.arch:
        crop_hw, batch = _crop_hw(crop or (224, 224)), args.batch or 2
        facts = facts_from_arch(args.arch, crop_hw, batch, drop_path_rate=args.drop_path)
        title = f'InternViT {args.arch}'
        config_piece = (None, True)
    else:
        sys.exit('error: give a CONFIG or --arch')
    strategies = list(dict.fromkeys(args.strategy or STRATEGIES))  # aliases resolved, once
    table = format_table(facts, strategies, args.gpus, args.gpu_mem, args.overhead,
                         config_piece[0])
    text = (f'# {title}\n{describe(facts, crop_hw, batch, args.overhead, config_piece)}\n\n'
            f'{table}')
    print(text)
    return text


if __name__ == '__main__':
    main()
