"""One-GPU check of InternViT-6B speed and memory (run by tools/analysis/gpu_check.sh).

Measures, at 504x504 in bf16: forward and forward+backward time with attn_impl sdpa and
flash_attn (when installed), the achieved TFLOP/s against this GPU's measured bf16 matmul peak,
and peak memory with and without activation checkpointing. Writes a markdown table.
"""
import argparse
import os
import os.path as osp
import statistics
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from backbones import InternViT  # noqa: E402
from backbones.layers import flash_attn_available  # noqa: E402
from tools.analysis.get_flops import analytic_backbone_macs  # noqa: E402


def cuda_time(fn, repeat, warmup=2):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def matmul_peak(n=8192, repeat=20):
    a = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    b = torch.randn(n, n, device='cuda', dtype=torch.bfloat16)
    t = cuda_time(lambda: a @ b, repeat)
    return 2 * n ** 3 / t / 1e12


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--arch', default='6b')
    p.add_argument('--size', type=int, default=504)
    p.add_argument('--batch', type=int, default=2)
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--out', default=os.environ.get('OUT', 'work_dirs/gpu_check'))
    args = p.parse_args()
    assert torch.cuda.is_available(), 'gpu_check needs a CUDA device'
    os.makedirs(args.out, exist_ok=True)
    peak = matmul_peak()
    rows = [f'# InternViT-{args.arch} on {torch.cuda.get_device_name()} '
            f'({args.size}x{args.size}, batch {args.batch}, bf16)', '',
            f'measured bf16 matmul peak: {peak:.0f} TFLOP/s', '',
            '| attn | mode | with_cp | time (ms) | img/s | TFLOP/s | % of peak | peak mem (GiB) |',
            '|---|---|---|---|---|---|---|---|']
    impls = ['sdpa'] + (['flash_attn'] if flash_attn_available() else [])
    model = None
    x = torch.randn(args.batch, 3, args.size, args.size, device='cuda', dtype=torch.bfloat16)
    for impl in impls:
        for with_cp in (False, True):
            del model
            torch.cuda.empty_cache()
            model = InternViT(args.arch, img_size=args.size, out_indices=(11, 23, 35, 47)
                              if args.arch == '6b' else (-1,), attn_impl=impl,
                              with_cp=with_cp).to('cuda', torch.bfloat16)
            macs = analytic_backbone_macs(model.arch_settings, args.size, args.size) * args.batch
            for mode in ('forward', 'forward+backward'):
                if mode == 'forward' and with_cp:
                    continue  # checkpointing changes nothing without backward
                torch.cuda.reset_peak_memory_stats()
                if mode == 'forward':
                    model.eval()
                    def fn():
                        with torch.no_grad():
                            model(x)
                    flops = 2 * macs
                else:
                    model.train()
                    def fn():
                        sum(o.float().mean() for o in model(x)).backward()
                    flops = 6 * macs + (2 * macs if with_cp else 0)
                t = cuda_time(fn, args.repeat)
                mem = torch.cuda.max_memory_allocated() / 2**30
                tflops = flops / t / 1e12
                rows.append(f'| {impl} | {mode} | {with_cp} | {t * 1e3:.0f} | '
                            f'{args.batch / t:.2f} | {tflops:.0f} | {100 * tflops / peak:.0f} | '
                            f'{mem:.1f} |')
                print(rows[-1], flush=True)
                model.zero_grad(set_to_none=True)
    table = '\n'.join(rows) + '\n'
    with open(osp.join(args.out, 'gpu_check.md'), 'w') as f:
        f.write(table)
    print(table)


if __name__ == '__main__':
    main()
