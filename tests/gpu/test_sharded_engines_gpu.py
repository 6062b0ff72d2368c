"""The sharded engines on a CUDA GPU (one process, NCCL): what the CPU cannot run.

FSDP1 (MMEngine's ``FSDPStrategy`` from ``configs/_base_/strategies/fsdp1_full_shard.py``,
with the training configs' bf16 ``AmpOptimWrapper``), DeepSpeed ZeRO 1/2/3 and FSDP2 from
their config pieces: ``load_from`` of a single file, 4 training steps against one fp32 CPU
process, a checkpoint, resume, and a single-file model that a plain model loads strictly.
Run by ``tools/analysis/gpu_check.sh`` (``pytest -m gpu``); skipped without CUDA.
"""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from tests.test_engine.test_strategies import (OPTIM, SCHEDULER, STEPS, STRATEGY_DIR,
                                              ToyClassifier, _reference, free_port, full_batch,
                                              make_batches, spawn)

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')]
ENGINES = ['fsdp1_full_shard', 'deepspeed_zero1', 'deepspeed_zero2', 'deepspeed_zero3',
           'fsdp2_full_shard']


def _build(piece, work_dir):
    from mmengine.registry import STRATEGIES

    import engine.strategies  # noqa: F401
    cfg = Config.fromfile(osp.join(STRATEGY_DIR, f'{piece}.py')).strategy.to_dict()
    cfg.update(work_dir=work_dir, env_kwargs=dict(
        launcher='pytorch', dist_cfg=dict(backend='nccl'), randomness=dict(seed=0)))
    return STRATEGIES.build(cfg)


def _prepare(strategy, piece, seed):
    torch.manual_seed(seed)
    # the 6B training configs: bf16 autocast through AmpOptimWrapper (converted or replaced
    # by the DeepSpeed / FSDP2 strategies)
    optim = dict(OPTIM, type='AmpOptimWrapper', dtype='bfloat16')
    strategy.prepare(ToyClassifier(), optim_wrapper=optim, param_scheduler=dict(SCHEDULER),
                     dispatch_kwargs=dict(max_iters=STEPS, epoch_length=STEPS,
                                          train_micro_batch_size_per_gpu=4))


def _train(strategy, batches):
    losses = []
    for batch in batches:
        log_vars = strategy.model.train_step(full_batch(batch), strategy.optim_wrapper)
        for s in strategy.param_schedulers:
            s.step()
        losses.append(float(log_vars['loss'].detach()))
    return losses


def _export(strategy, piece, path, ckpt):
    if hasattr(strategy, 'export_consolidated'):
        strategy.export_consolidated(path)
    else:  # FSDP1 with state_dict_cfg='full' already writes a single file
        import shutil
        shutil.copy(ckpt, path)


def _worker(rank, port, tmp, piece):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK='0',
                      LOCAL_RANK='0', WORLD_SIZE='1', LOCAL_WORLD_SIZE='1')
    torch.cuda.set_device(0)
    batches = make_batches()
    out = {}
    s1 = _build(piece, osp.join(tmp, 'work1'))
    _prepare(s1, piece, seed=123)
    s1.load_checkpoint(osp.join(tmp, 'init.pth'), strict=True)
    losses = _train(s1, batches[:2])
    ckpt2 = osp.join(tmp, 'work1', 'ckpt_2.pth')
    s1.save_checkpoint(ckpt2, extra_ckpt=dict(meta=dict(iter=2, epoch=0)))
    losses += _train(s1, batches[2:])
    out['losses'] = losses
    ckpt4 = osp.join(tmp, 'work1', 'ckpt_4.pth')
    s1.save_checkpoint(ckpt4)
    _export(s1, piece, osp.join(tmp, 'full.pth'), ckpt4)
    out['peak_mib'] = torch.cuda.max_memory_allocated() / 2**20

    s2 = _build(piece, osp.join(tmp, 'work2'))
    _prepare(s2, piece, seed=7)
    s2.resume(ckpt2)
    out['resumed_losses'] = _train(s2, batches[2:])
    torch.save(out, osp.join(tmp, 'results.pth'))


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp('gpu_engines')
    torch.manual_seed(0)
    init = ToyClassifier()
    init.init_weights()
    init_sd = {k: v.clone() for k, v in init.state_dict().items()}
    torch.save({'meta': {}, 'state_dict': init_sd}, tmp / 'init.pth')
    return dict(tmp=tmp, init=init_sd, ref=_reference(init_sd))


@pytest.mark.parametrize('piece', ENGINES)
def test_engine_trains_checkpoints_resumes_and_exports_on_gpu(reference, piece, tmp_path):
    import shutil
    shutil.copy(reference['tmp'] / 'init.pth', tmp_path / 'init.pth')
    spawn(_worker, free_port(), str(tmp_path), piece, nprocs=1, timeout=240.0)
    res = torch.load(tmp_path / 'results.pth', weights_only=False)
    ref = reference['ref']
    torch.testing.assert_close(torch.tensor(res['losses'], dtype=torch.float64),
                               torch.tensor(ref['losses'], dtype=torch.float64),
                               atol=3e-2, rtol=3e-2)
    torch.testing.assert_close(torch.tensor(res['resumed_losses']),
                               torch.tensor(res['losses'][2:]), atol=1e-3, rtol=1e-3)
    from mmengine.runner import load_checkpoint
    model = ToyClassifier()
    load_checkpoint(model, str(tmp_path / 'full.pth'), strict=True)
    last = ref['states'][-1]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v.float(), last[k].float(), atol=5e-3, rtol=1e-2, msg=k)
    print(f'{piece}: peak {res["peak_mib"]:.0f} MiB, losses {res["losses"]}')


def test_mask_rcnn_bf16_step_on_gpu():
    """The 6B detection recipes train under bf16 autocast: mmcv's CUDA NMS reads float32 only
    and its CUDA RoIAlign has no bf16 (detection/mixed_precision.py casts for them)."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.optim import build_optim_wrapper

    import detection  # noqa: F401
    from tests.test_detection._tiny import DEMO_ADAPTER_CONFIG, fake_batch
    register_all_modules(init_default_scope=True)
    cfg = Config.fromfile(DEMO_ADAPTER_CONFIG)
    model = MODELS.build(cfg.model).cuda()
    model.init_weights()
    wrapper = build_optim_wrapper(model, dict(type='AmpOptimWrapper', dtype='bfloat16',
                                              optimizer=dict(type='AdamW', lr=1e-4)))
    inputs, samples = fake_batch(cfg.model.roi_head.bbox_head.num_classes, batch=2)
    data = dict(inputs=[x for x in (inputs * 50 + 120).clamp(0, 255).byte()],
                data_samples=samples)
    log_vars = model.train_step(data, wrapper)
    assert torch.isfinite(log_vars['loss'])
    model.eval()
    pred = model.test_step(data)[0].pred_instances
    assert torch.isfinite(pred.bboxes.float()).all()
