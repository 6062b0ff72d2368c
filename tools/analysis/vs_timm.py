"""Forward time of InternViT against timm's VisionTransformer at the same architecture.

    python tools/analysis/vs_timm.py [--width 384 --depth 12 --heads 6] [--repeat 15]

Both models get the same weights (ours are loaded from timm's state dict, so the outputs are
checked to match too); runs alternate between the two so that machine noise hits both alike,
and the medians are compared. Defaults: LayerNorm variant, 224x224 batch 4 and 504x504 batch 1.
"""
import argparse
import os.path as osp
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def build_pair(width, depth, heads, img):
    from timm.models.vision_transformer import VisionTransformer

    from backbones import InternViT
    peer = VisionTransformer(img_size=img, patch_size=14, embed_dim=width, depth=depth,
                             num_heads=heads, init_values=0.1, final_norm=False,
                             dynamic_img_size=True, num_classes=0).eval()
    ours = InternViT(arch=dict(embed_dims=width, num_layers=depth, num_heads=heads, mlp_ratio=4.0,
                               norm_type='layer_norm', qk_norm=False, qkv_bias=True,
                               layer_scale_init=0.1),
                     img_size=img, pretrain_size=img, out_indices=(depth - 1,),
                     pos_embed_antialias=True).eval()
    sd = {k: v for k, v in peer.state_dict().items() if k in ours.state_dict()}
    ours.load_state_dict(sd)
    return ours, peer


def timed(fn, x):
    start = time.perf_counter()
    with torch.no_grad():
        fn(x)
    return time.perf_counter() - start


def compare(width, depth, heads, size, batch, repeat, warmup=2):
    ours, peer = build_pair(width, depth, heads, size)
    x = torch.randn(batch, 3, size, size)
    def run_peer(t):
        return peer.forward_intermediates(t, indices=[depth - 1], intermediates_only=True)
    with torch.no_grad():
        a, b = ours(x)[0], run_peer(x)[0]
    err = ((a - b).norm() / b.norm()).item()
    for _ in range(warmup):
        timed(ours, x), timed(run_peer, x)
    t_ours, t_peer = [], []
    for _ in range(repeat):
        t_ours.append(timed(ours, x))
        t_peer.append(timed(run_peer, x))
    mo, mp = statistics.median(t_ours), statistics.median(t_peer)
    print(f'{size}x{size} batch {batch}: InternViT {mo * 1e3:.1f} ms, timm {mp * 1e3:.1f} ms, '
          f'ratio ours/timm = {mo / mp:.3f} (median of {repeat} alternating runs; '
          f'outputs rel. err {err:.1e})')
    return mo / mp


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--width', type=int, default=384)
    p.add_argument('--depth', type=int, default=12)
    p.add_argument('--heads', type=int, default=6)
    p.add_argument('--repeat', type=int, default=15)
    p.add_argument('--threads', type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    compare(args.width, args.depth, args.heads, 224, 4, args.repeat)
    compare(args.width, args.depth, args.heads, 504, 1, args.repeat)


if __name__ == '__main__':
    main()
