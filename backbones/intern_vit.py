"""InternViT backbone (InternViT-6B and InternViT-300M) for dense prediction.

Registered once in mmengine's root ``MODELS`` registry, so that ``mmseg.registry.MODELS`` and
``mmdet.registry.MODELS`` (its children) both resolve ``type='InternViT'``.
"""
from __future__ import annotations

import copy
import difflib
import logging
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS
from torch.utils.checkpoint import checkpoint

from .layers import Block, PatchEmbed
from .pos_embed import resample_abs_pos_embed

ARCH_KEYS = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratio', 'norm_type', 'qk_norm',
             'qkv_bias', 'layer_scale_init')

# InternViT-6B: 3200 wide, 25 heads, MLP 12800, RMSNorm, QK-norm, LayerScale, no qkv bias.
_6B = dict(embed_dims=3200, num_layers=48, num_heads=25, mlp_ratio=4.0, norm_type='rms_norm',
           qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
ARCH_PRESETS: Dict[str, dict] = {
    '6b': _6B,  # the 224px release (InternViT-6B-224px)
    '6b-448px': dict(_6B, num_layers=45),  # V1.0 / V1.2 / V1.5 / V2.5 448px releases
    # InternViT-300M-448px (timm's vit_intern300m_patch14_448)
    '300m': dict(embed_dims=1024, num_layers=24, num_heads=16, mlp_ratio=4.0,
                 norm_type='layer_norm', qk_norm=False, qkv_bias=True, layer_scale_init=0.1),
}
PRESET_PRETRAIN_SIZE = {'6b': 224, '6b-448px': 448, '300m': 448}
PATCH_EMBED_RESIZE = ('bicubic', 'pinv')


def resolve_arch(arch: Union[str, dict]) -> dict:
    """Return the full arch dict for a preset name or a (possibly partial-free) custom dict."""
    if isinstance(arch, str):
        if arch not in ARCH_PRESETS:
            raise ValueError(f'Unknown InternViT arch {arch!r}; presets: {sorted(ARCH_PRESETS)}')
        return dict(ARCH_PRESETS[arch])
    if not isinstance(arch, dict):
        raise TypeError(f'arch must be a preset name or a dict, got {type(arch).__name__}')
    missing = [k for k in ARCH_KEYS if k not in arch]
    unknown = [k for k in arch if k not in ARCH_KEYS]
    if missing or unknown:
        raise ValueError(f'InternViT arch dict: missing keys {missing}, unknown keys {unknown}; '
                         f'expected exactly {list(ARCH_KEYS)}')
    arch = dict(arch)
    if arch['embed_dims'] % arch['num_heads']:
        raise ValueError(f"InternViT arch: embed_dims={arch['embed_dims']} is not divisible by "
                         f"num_heads={arch['num_heads']}")
    return arch


@MODELS.register_module()
class InternViT(BaseModule):
    """InternViT, the vision encoder of InternVL, as a dense-prediction backbone.

    Args:
        arch (str | dict): ``'6b'`` (48 blocks, 224px release), ``'6b-448px'`` (45 blocks, the
            448px releases), ``'300m'``, or a dict with exactly the keys ``embed_dims,
            num_layers, num_heads, mlp_ratio, norm_type ('rms_norm'|'layer_norm'), qk_norm,
            qkv_bias, layer_scale_init (float or None)``.
        img_size (int | tuple[int, int]): Training crop. ``pos_embed`` is a parameter at its
            token grid ``img_size // patch_size`` (as in mmseg's ViT and the InternVL
            reference: 504 / 14 = 36, 1 + 36 * 36 tokens); pretrained weights of another grid
            are resampled (bicubic) once when loaded, inputs of another size at run time, so
            any input size is accepted.
        patch_size (int): Patch size of the stem (14 for every published weight; 16 in the
            adapter and detection recipes, whose 14 x 14 pretrained kernel is resized on load,
            see ``patch_embed_resize``).
        pretrain_size (int, optional): Image size of the pretrained weights (224 or 448 for the
            releases); informative only, since the grid of a checkpoint's ``pos_embed`` is read
            from its token count. Defaults to the preset's release size, or ``img_size`` for a
            custom arch.
        out_indices (Sequence[int] | int): Blocks (0-based; negative counts from the end) whose
            outputs are returned.
        drop_path_rate (float): Stochastic depth, linearly increasing over the blocks.
        with_cp (bool): Activation checkpointing per block during training.
        attn_impl (str): ``'auto'`` (default: flash-attn for CUDA bf16/fp16 inputs when the
            package is installed, else sdpa), ``'sdpa'``, ``'flash_attn'`` or ``'naive'``.
        frozen (bool): Freeze every parameter (linear probing / head tuning) and keep the
            backbone in eval mode.
        frozen_dtype (str, optional): With ``frozen=True``, hold the frozen weights in this dtype
            (``'bfloat16'``) to halve their memory, as the reference does for a frozen 6B
            backbone. Outputs stay float32.
        norm_eps (float): Epsilon of every norm (1e-6 in all releases).
        pos_embed_antialias (bool): Resample position embeddings as timm does (antialiased
            bicubic) instead of as InternVL / transformers do. Only for weights fine-tuned in
            timm at dynamic sizes.
        window_size (int, optional): Window attention (in tokens) for every block not listed in
            ``global_indices``, for large detection inputs (ViTDet style). None: global
            attention everywhere.
        global_indices (Sequence[int]): Blocks that keep global attention when ``window_size``
            is set (e.g. the last block of each quarter).
        window_pad_mask (bool): Mask the zero tokens that pad the grid to a multiple of the
            window (default). False: they take part in the softmax unmasked, as in the
            InternVL-MMDetSeg detection backbone.
        with_cls_token (bool): Prepend the cls token (default, as in pretraining). False: the
            blocks see patch tokens only, as the InternVL adapter and detection backbones do;
            ``pos_embed`` keeps its cls slot (unused) so that checkpoints keep their layout, and
            a checkpoint's ``cls_token`` is dropped on load.
        patch_embed_resize (str): How a checkpoint's patch kernel of another size is resized on
            load: ``'bicubic'`` (default; plain ``F.interpolate``, bicubic, align_corners=False,
            no rescaling, as the InternVL references do for 14 px weights in a 16 px stem) or
            ``'pinv'`` (timm's ``resample_patch_embed``, which preserves the patch tokens of a
            resized image).
        in_channels (int): Input channels.
        init_cfg (dict, optional): ``dict(type='Pretrained', checkpoint=PATH)`` with PATH in any
            supported layout (see ``backbones.checkpoint``); add ``strict=False`` to only warn
            about missing/unexpected keys.

    Forward:
        x (Tensor): (B, in_channels, H, W), any H and W (padded to a multiple of the patch).
        Returns a tuple of float32 (B, embed_dims, ceil(H/p), ceil(W/p)) maps, one per
        ``out_indices`` entry, cls token removed.
    """

    def __init__(self,
                 arch: Union[str, dict] = '6b',
                 img_size: Union[int, Tuple[int, int]] = 224,
                 patch_size: int = 14,
                 pretrain_size: Optional[int] = None,
                 out_indices: Union[int, Sequence[int]] = -1,
                 drop_path_rate: float = 0.0,
                 with_cp: bool = False,
                 attn_impl: str = 'auto',
                 frozen: bool = False,
                 frozen_dtype: Optional[str] = None,
                 norm_eps: float = 1e-6,
                 pos_embed_antialias: bool = False,
                 window_size: Optional[int] = None,
                 global_indices: Sequence[int] = (),
                 window_pad_mask: bool = True,
                 with_cls_token: bool = True,
                 patch_embed_resize: str = 'bicubic',
                 in_channels: int = 3,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=None)
        # Pretrained loading is ours (see init_weights): mmengine's PretrainedInit would call
        # torch.load and load non-strictly, throwing the mismatch report away.
        self._init_cfg = copy.deepcopy(init_cfg)
        if init_cfg is not None and init_cfg.get('type') != 'Pretrained':
            raise ValueError(f"InternViT init_cfg supports type='Pretrained' only, got {init_cfg}")
        if init_cfg is not None:
            # a typo (`checkpont=`) would otherwise surface as a late KeyError
            known = ('type', 'checkpoint', 'strict')
            unknown = sorted(set(init_cfg) - set(known))
            if unknown or 'checkpoint' not in init_cfg:
                hints = [f'{k!r} -> {m[0]!r}?' for k in unknown
                         for m in [difflib.get_close_matches(k, known, n=1)] if m]
                raise ValueError(
                    f'InternViT init_cfg {dict(init_cfg)}: '
                    + (f'unknown keys {unknown} ({", ".join(hints) or "no close match"}); '
                       if unknown else '')
                    + ('' if 'checkpoint' in init_cfg else "'checkpoint' is missing; ")
                    + f'it takes {", ".join(known)}')
        self.arch_settings = resolve_arch(arch)
        a = self.arch_settings
        self.embed_dims = a['embed_dims']
        self.num_layers = a['num_layers']
        self.patch_size = patch_size
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if min(self.img_size) < patch_size:
            raise ValueError(f'img_size {self.img_size} is smaller than patch_size {patch_size}')
        if pretrain_size is None:
            pretrain_size = PRESET_PRETRAIN_SIZE.get(arch, self.img_size[0]) \
                if isinstance(arch, str) else self.img_size[0]
        self.pretrain_size = pretrain_size
        self.pos_grid = (self.img_size[0] // patch_size, self.img_size[1] // patch_size)
        if patch_embed_resize not in PATCH_EMBED_RESIZE:
            raise ValueError(f'patch_embed_resize must be one of {PATCH_EMBED_RESIZE}, got '
                             f'{patch_embed_resize!r}')
        self.patch_embed_resize = patch_embed_resize
        self.with_cls_token = with_cls_token
        self.num_prefix_tokens = 1 if with_cls_token else 0

        if isinstance(out_indices, int):
            out_indices = [out_indices]
        resolved = []
        for i in out_indices:
            j = i + self.num_layers if i < 0 else i
            if not 0 <= j < self.num_layers:
                raise ValueError(f'out_indices entry {i} is outside the depth of '
                                 f'{self.num_layers} blocks (valid: 0..{self.num_layers - 1} '
                                 f'or negative)')
            resolved.append(j)
        self.out_indices = tuple(resolved)
        self.with_cp = with_cp
        self.frozen = frozen
        self.pos_embed_antialias = pos_embed_antialias

        self.patch_embed = PatchEmbed(patch_size, in_channels, self.embed_dims)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims)) \
            if with_cls_token else None
        # 1 + h*w tokens at the crop grid; the first (cls) slot also without a cls token, so
        # that checkpoints keep their layout.
        num_pos = self.pos_grid[0] * self.pos_grid[1] + 1
        self.pos_embed = nn.Parameter(torch.zeros(1, num_pos, self.embed_dims))
        dpr = [drop_path_rate * i / max(self.num_layers - 1, 1) for i in range(self.num_layers)]
        self.blocks = nn.ModuleList([
            Block(self.embed_dims, a['num_heads'], a['mlp_ratio'], qkv_bias=a['qkv_bias'],
                  qk_norm=a['qk_norm'], norm_type=a['norm_type'],
                  layer_scale_init=a['layer_scale_init'], drop_path=dpr[i],
                  attn_impl=attn_impl, norm_eps=norm_eps, window_pad_mask=window_pad_mask,
                  window_size=None if (window_size is None or i in global_indices
                                       or i - self.num_layers in global_indices)
                  else window_size) for i in range(self.num_layers)
        ])
        # Blocks after the last requested output do not contribute: skip them at run time.
        self._last_block = max(self.out_indices)

        self.frozen_dtype = None
        if frozen_dtype is not None:
            if not frozen:
                raise ValueError('frozen_dtype is only meaningful with frozen=True')
            self.frozen_dtype = getattr(torch, frozen_dtype)
        if frozen:
            self._freeze()

    # ------------------------------------------------------------------ freezing
    def _freeze(self) -> None:
        for p in self.parameters():
            p.requires_grad = False
        self.eval()
        if self.frozen_dtype is not None:
            self.to(self.frozen_dtype)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            super().train(False)  # frozen: no drop path, deterministic features
        return self

    def _apply(self, fn, *args, **kwargs):
        # Keep frozen weights in frozen_dtype even when the runner casts the model (e.g. .float()).
        out = super()._apply(fn, *args, **kwargs)
        if getattr(self, 'frozen_dtype', None) is not None:
            for p in self.parameters():
                if p.is_floating_point() and p.dtype != self.frozen_dtype:
                    p.data = p.data.to(self.frozen_dtype)
        return out

    # ------------------------------------------------------------------ weights
    def init_weights(self) -> None:
        if self._init_cfg is not None:
            from .checkpoint import load_pretrained
            cfg = self._init_cfg
            load_pretrained(self, cfg['checkpoint'], strict=cfg.get('strict', True))
            self._is_init = True
            return
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        self._is_init = True

    # ------------------------------------------------------------------ forward
    def get_pos_embed(self, hw: Tuple[int, int]) -> torch.Tensor:
        """Position embeddings (1, prefix + h*w, C) for a token grid of size ``hw``: the
        parameter itself at the crop grid, else resampled (bicubic, in float32); the cls slot is
        left out without a cls token."""
        pos = resample_abs_pos_embed(self.pos_embed, hw, self.pos_grid,
                                     antialias=self.pos_embed_antialias)
        return pos if self.with_cls_token else pos[:, 1:]

    def prepare_tokens(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patchify, prepend the cls token (if any) and add position embeddings:
        (B, prefix + h*w, C)."""
        if min(x.shape[-2:]) < self.patch_size:
            raise ValueError(f'input of {x.shape[-2]}x{x.shape[-1]} pixels is smaller than the '
                             f'{self.patch_size}px patch; use crops of at least the patch size')
        dtype = self.patch_embed.proj.weight.dtype
        x, hw = self.patch_embed(x.to(dtype))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return x + self.get_pos_embed(hw).to(x.dtype), hw

    def run_block(self, idx: int, x: torch.Tensor,
                  hw: Optional[Tuple[int, int]] = None) -> torch.Tensor:
        """Block ``idx`` on (B, prefix + h*w, C) tokens; ``hw`` is the token grid (windows)."""
        block = self.blocks[idx]
        # Also when the ViT itself is frozen (eval mode) but gradients flow through it to
        # something trainable after it, as in the adapter.
        if self.with_cp and x.requires_grad and torch.is_grad_enabled():
            return checkpoint(block, x, hw, use_reentrant=False)
        return block(x, hw)

    def tokens_to_map(self, x: torch.Tensor, hw: Tuple[int, int]) -> torch.Tensor:
        """(B, prefix + h*w, C) tokens -> float32 (B, C, h, w), cls token dropped, contiguous
        NCHW (a transposed view would reach mmcv's RoIAlign, which reads raw NCHW memory)."""
        B, _, C = x.shape
        x = x[:, self.num_prefix_tokens:].transpose(1, 2).reshape(B, C, hw[0], hw[1])
        return x.float().contiguous()

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        x, hw = self.prepare_tokens(x)
        outs = {}
        for i in range(self._last_block + 1):
            x = self.run_block(i, x, hw)
            if i in self.out_indices:
                outs[i] = self.tokens_to_map(x, hw)
        return tuple(outs[i] for i in self.out_indices)


def count_parameters(arch: Union[str, dict] = '6b', **kwargs) -> int:
    """Parameter count of an InternViT, built on the meta device (nothing is allocated)."""
    with torch.device('meta'):
        model = InternViT(arch=arch, **kwargs)
    return sum(p.numel() for p in model.parameters())


def log(msg: str, level: int = logging.INFO) -> None:
    print_log(msg, logger='current', level=level)
