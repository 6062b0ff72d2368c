"""Images per second and peak memory of a config's model, for inference or a training step.

    python tools/analysis/benchmark.py CONFIG [--shape H W] [--batch 2] [--train]
        [--repeat 10] [--warmup 3] [--device cpu|cuda] [--amp] [--threads N]
        [--cfg-options k=v ...]

Random weights (init_cfg is dropped) and random images of the given shape; warm-up runs are
discarded and the median of the timed runs is reported, with the CPU thread count and the
machine's load average (CPU timings depend on both: see tools/_threads.py). Peak memory is
``torch.cuda.max_memory_allocated`` on CUDA and the growth of the process's peak RSS on the CPU.
Before anything is allocated, the model's size (counted on the meta device; with ``--train``
plus gradients and AdamW states) is compared with the device's free memory: a model that cannot
fit stops with both numbers instead of dying in the allocator.
"""
import argparse
import os.path as osp
import resource
import statistics
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))

from tools._threads import add_threads_argument, describe_machine, prepare_process  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='Images per second and peak memory of a config\'s model (random weights, '
                    'random images), for inference or a training step')
    p.add_argument('config', help='segmentation or detection config')
    p.add_argument('--shape', type=int, nargs='+', default=None, metavar='H [W]',
                   help='input height and width (default: the config\'s crop_size, else 512)')
    p.add_argument('--batch', type=int, default=2, help='images per step (default 2)')
    p.add_argument('--train', action='store_true',
                   help='time a training step (forward, backward, AdamW step) instead of '
                        'inference')
    p.add_argument('--repeat', type=int, default=10, help='timed steps (default 10)')
    p.add_argument('--warmup', type=int, default=3,
                   help='untimed steps first (default 3)')
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu',
                   help='cpu or cuda[:N] (default: cuda when available)')
    p.add_argument('--amp', action='store_true', help='run under bf16 autocast')
    add_threads_argument(p)
    from mmengine.config import DictAction
    p.add_argument('--cfg-options', nargs='+', action=DictAction, default={},
                   help='key=value overrides, as in tools/train.py')
    return p.parse_args(argv)


def build_model(cfg):
    from mmengine.registry import MODELS, init_default_scope
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    model_cfg = cfg.model.copy()
    model_cfg.backbone.pop('init_cfg', None)
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model


def make_batch(model, cfg, batch, h, w, device):
    scope = cfg.get('default_scope', 'mmseg')
    imgs = [torch.randint(0, 255, (3, h, w), dtype=torch.uint8) for _ in range(batch)]
    if scope == 'mmseg':
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample
        num_classes = model.decode_head.num_classes
        samples = []
        for _ in range(batch):
            s = SegDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                            pad_shape=(h, w), scale_factor=(1.0, 1.0)))
            s.gt_sem_seg = PixelData(data=torch.randint(0, num_classes, (1, h, w)))
            samples.append(s)
    else:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData
        samples = []
        for _ in range(batch):
            s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                            pad_shape=(h, w), scale_factor=(1.0, 1.0),
                                            batch_input_shape=(h, w)))
            inst = InstanceData()
            xy = torch.rand(3, 2) * torch.tensor([w / 2, h / 2])
            inst.bboxes = torch.cat([xy, xy + torch.tensor([w / 3, h / 3])], dim=1)
            inst.labels = torch.zeros(3, dtype=torch.long)
            from mmdet.structures.mask import BitmapMasks
            inst.masks = BitmapMasks(torch.zeros(3, h, w, dtype=torch.uint8).numpy(), h, w)
            s.gt_instances = inst
            samples.append(s)
    return model.data_preprocessor(dict(inputs=imgs, data_samples=samples), True)


def check_memory(cfg, device: str, train: bool) -> None:
    """Stop, giving both numbers, when the model cannot fit the device's free memory."""
    from mmengine.registry import init_default_scope

    from tools.analysis._memory import GiB, build_on_meta, fits, model_bytes
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    need = model_bytes(build_on_meta(cfg.model), train=train)
    ok, free = fits(need, device)
    if not ok:
        what = 'weights, gradients and AdamW states' if train else 'weights'
        sys.exit(f'error: the model needs {need / GiB:.1f} GiB for its {what} alone, but '
                 f'{device} has {free / GiB:.1f} GiB free: benchmark it on a larger device '
                 f'(or count its FLOPs with tools/analysis/get_flops.py, which needs no memory)')


def main(argv=None):
    args = parse_args(argv)
    if not osp.isfile(args.config):
        sys.exit(f'error: config file not found: {args.config}')
    threads = prepare_process(args.threads)
    from mmengine.config import Config
    cfg = Config.fromfile(args.config)
    cfg.merge_from_dict(args.cfg_options)
    if args.shape:
        h, w = (args.shape * 2)[:2]
    else:
        crop = cfg.get('crop_size', (512, 512))
        h, w = (crop, crop) if isinstance(crop, int) else crop
    device = torch.device(args.device)
    check_memory(cfg, args.device, args.train)
    machine = describe_machine()  # before our own work raises the load
    model = build_model(cfg).to(device)
    data = make_batch(model, cfg, args.batch, h, w, device)
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6) \
        if args.train else None
    model.train(args.train)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.amp):
            if args.train:
                losses = model(**data, mode='loss')
                loss = sum(v.sum() for k, v in losses.items() if 'loss' in k and torch.is_tensor(v))
            else:
                with torch.no_grad():
                    model(**data, mode='predict')
        if args.train:
            loss.backward()
            optim.step()
            optim.zero_grad(set_to_none=True)
        if device.type == 'cuda':
            torch.cuda.synchronize()

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if device.type == 'cuda':
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeat):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    med = statistics.median(times)
    if device.type == 'cuda':
        peak = torch.cuda.max_memory_allocated() / 2**20
        mem = f'peak CUDA memory {peak:.0f} MiB'
    else:
        mem = (f'peak RSS growth {(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024:.0f}'
               f' MiB')
    mode = 'train step' if args.train else 'inference'
    print(f'{mode} {h}x{w} batch {args.batch} on {device}: {args.batch / med:.2f} img/s '
          f'(median {med * 1e3:.1f} ms of {args.repeat} runs after {args.warmup} warm-up), {mem}')
    print(f'{threads} torch thread(s); machine: {machine} (1/5/15-minute load averages before '
          f'the run)')
    return args.batch / med


if __name__ == '__main__':
    main()
