"""FLOPs of a config's model (fvcore), backbone and head reported separately.

    python tools/analysis/get_flops.py CONFIG [--shape H W] [--meta] [--cfg-options k=v ...]

Prints the parameter count (all and trainable, as mmseg's get_flops does) and the FLOPs.
Counts are multiply-adds (fvcore's convention: one "flop" per MAC); the table also shows
2 x MACs. ``--meta`` builds the model on the meta device (no memory; for the 6B backbone),
counting with torch's FlopCounterMode, which runs on meta tensors, instead of fvcore's
tracer, which needs real ones. Without ``--meta`` the model's size is first compared with the
free memory: a model that would not fit (the 6B backbone needs about 24 GiB in float32) is
counted on the meta device too, and the output says so. fvcore has no handle for
``scaled_dot_product_attention``; we add one (2 batched matmuls: B*heads*N*N*d MACs each),
otherwise the attention would be missed.
"""
import argparse
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools._threads import add_threads_argument, prepare_process  # noqa: E402


def analytic_backbone_macs(arch: dict, h: int, w: int, patch: int = 14) -> int:
    """Multiply-adds of an InternViT forward at an HxW input (cls token included)."""
    gh, gw = -(-h // patch), -(-w // patch)
    n = gh * gw + 1
    c = arch['embed_dims']
    hidden = int(c * arch['mlp_ratio'])
    per_block = n * c * 3 * c + n * c * c + 2 * n * c * hidden + 2 * n * n * c
    return arch['num_layers'] * per_block + gh * gw * c * 3 * patch * patch


def _sdpa_handle(inputs, outputs):
    from fvcore.nn.jit_handles import get_shape
    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    *batch, n, d = q
    m = k[-2]
    b = 1
    for s in batch:
        b *= s
    return b * n * m * d * 2  # q @ k^T and attn @ v


def fvcore_macs(module, inputs):
    """Total and per-submodule MACs by fvcore on real tensors."""
    from fvcore.nn import FlopCountAnalysis
    fca = FlopCountAnalysis(module, inputs)
    fca.set_op_handle('aten::scaled_dot_product_attention', _sdpa_handle)
    fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return fca.total(), fca.by_module()


def meta_macs(module, inputs):
    """MACs counted by torch's FlopCounterMode (works on the meta device)."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        module(*inputs)
    return counter.get_total_flops() // 2


def backbone_macs(backbone, h, w, meta=False):
    device = 'meta' if meta else 'cpu'
    x = torch.zeros(1, 3, h, w, device=device)
    with torch.no_grad():
        if meta:
            return meta_macs(backbone, (x,))
        return fvcore_macs(backbone.eval(), (x,))[0]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='Parameters and FLOPs (multiply-adds) of a '
                                            'config\'s model')
    p.add_argument('config', help='segmentation or detection config')
    p.add_argument('--shape', type=int, nargs='+', default=None,
                   help='input H W (default: the config crop size)')
    p.add_argument('--meta', action='store_true',
                   help='build on the meta device and count the backbone only')
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='key=value overrides, as in tools/train.py')
    add_threads_argument(p)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    prepare_process(args.threads)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    from mmengine.registry import MODELS
    if args.shape:
        h, w = (args.shape * 2)[:2]
    else:
        crop = cfg.get('crop_size', (512, 512))
        h, w = (crop, crop) if isinstance(crop, int) else crop
    model_cfg = cfg.model
    from tools.analysis._memory import GiB, build_on_meta, fits, model_bytes, parameter_count
    meta_model = build_on_meta(model_cfg)
    n_params, n_trainable = parameter_count(meta_model)
    need = model_bytes(meta_model)
    del meta_model
    ok, free = fits(need, 'cpu')
    if not args.meta and not ok:
        print(f'the model needs {need / GiB:.1f} GiB but {free / GiB:.1f} GiB are free: '
              f'counting on the meta device (backbone only; as --meta)')
        args.meta = True
    if args.meta:
        bb_cfg = dict(model_cfg.backbone)
        bb_cfg.pop('init_cfg', None)
        with torch.device('meta'):
            backbone = MODELS.build(bb_cfg)
        total = backbone_macs(backbone, h, w, meta=True)
        rows = [('backbone', total)]
    else:
        model_cfg.pop('data_preprocessor', None)
        model_cfg.backbone.pop('init_cfg', None)
        model = MODELS.build(model_cfg).eval()
        x = torch.zeros(1, 3, h, w)
        with torch.no_grad():
            total, per = fvcore_macs(_Tensor(model), (x,))
        bb = per.get('model.backbone', 0)
        rows = [('backbone', bb), ('neck + heads', total - bb), ('total', total)]
    arch = getattr(cfg.model.backbone, 'arch', None)
    print(f'params {_count(n_params)} ({_count(n_trainable)} trainable)')
    print(f'input {h}x{w}')
    print(f'{"part":<14}{"GMACs":>14}{"TFLOPs (2xMAC)":>18}')
    for name, macs in rows:
        print(f'{name:<14}{macs / 1e9:>14.2f}{2 * macs / 1e12:>18.3f}')
    if arch is not None:
        from backbones.intern_vit import resolve_arch
        patch = cfg.model.backbone.get('patch_size', 14)
        ref = analytic_backbone_macs(resolve_arch(arch), h, w, patch)
        print(f'analytic backbone: {ref / 1e9:.2f} GMACs '
              f'(counted/analytic = {rows[0][1] / ref:.4f})')


def _count(n: int) -> str:
    return f'{n / 1e9:.3f} B' if n >= 1e9 else f'{n / 1e6:.2f} M'


class _Tensor(torch.nn.Module):
    """Runs a segmentor / detector in tensor mode (no data samples) for tracing."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        feats = self.model.extract_feat(x)
        head = getattr(self.model, 'decode_head', None)
        if head is not None:
            return head(feats)
        return feats


if __name__ == '__main__':
    main()
