"""DeepSpeed ZeRO 1/2/3 (``DeepSpeedZeroStrategy``) on 2 gloo CPU processes.

DeepSpeed runs on the CPU through its CPU accelerator (``DS_ACCELERATOR=cpu``, gloo), so the
whole path is exercised here, from the strategy pieces in ``configs/_base_/strategies``:
``load_from`` of a single file into the sharded optimizer, layer-decay groups, frozen
parameters without optimizer state, bf16 training against one fp32 process, DeepSpeed
checkpoint folders, resume, and the consolidated single-file export (live and offline).
What needs a GPU (NCCL, fused kernels, speed) is in ``tests/gpu``.
"""
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config

from .test_strategies import (OPTIM, PER_RANK, SCHEDULER, STEPS, STRATEGY_DIR, WORLD,
                              ToyClassifier, _assert_state_close, _gather_mean, _reference,
                              free_port, make_batches, rank_batch, spawn)

pytestmark = pytest.mark.slow
FROZEN = ('backbone.patch_embed.proj.weight', 'backbone.patch_embed.proj.bias')


def _init_env(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), LOCAL_WORLD_SIZE=str(WORLD),
                      OMP_NUM_THREADS='1', DS_ACCELERATOR='cpu')
    torch.set_num_threads(1)


def _strategy(stage: int, work_dir: str):
    from mmengine.registry import STRATEGIES

    import engine.strategies  # noqa: F401
    cfg = Config.fromfile(osp.join(STRATEGY_DIR, f'deepspeed_zero{stage}.py')).strategy.to_dict()
    cfg.update(work_dir=work_dir, env_kwargs=dict(
        launcher='pytorch', dist_cfg=dict(backend='nccl'),  # becomes gloo without CUDA
        randomness=dict(seed=0)))
    return STRATEGIES.build(cfg)


def _prepare(strategy, seed):
    torch.manual_seed(seed)  # the weights come from init.pth or the resumed folder
    strategy.prepare(ToyClassifier(with_cp=False), optim_wrapper=dict(OPTIM),
                     param_scheduler=dict(SCHEDULER),
                     dispatch_kwargs=dict(max_iters=STEPS, epoch_length=STEPS,
                                          train_micro_batch_size_per_gpu=PER_RANK))


def _train(strategy, batches, rank):
    losses = []
    for batch in batches:
        log_vars = strategy.model.train_step(rank_batch(batch, rank), strategy.optim_wrapper)
        for s in strategy.param_schedulers:
            s.step()
        losses.append(float(log_vars['loss'].detach()))
    return _gather_mean(losses)


def _worker(rank, port, tmp, stage):
    """Phase 1: load init.pth, 2 steps, save a DeepSpeed folder, 2 steps, export.
    Phase 2: a fresh model and strategy resume the folder and run the last 2 steps."""
    _init_env(rank, port)
    import torch.distributed as dist
    batches = make_batches()
    out = {}
    s1 = _strategy(stage, osp.join(tmp, 'work1'))
    _prepare(s1, seed=123)
    engine = s1.model.model
    out['zero_stage'] = engine.zero_optimization_stage()
    out['bf16'] = engine.bfloat16_enabled()
    out['gradient_clipping'] = engine.gradient_clipping()
    s1.load_checkpoint(osp.join(tmp, 'init.pth'), strict=True)
    out['loaded'] = s1.full_model_state_dict()
    # optimizer state: float32 moments for the trained parameters only, spread over the ranks
    states = s1.optim_wrapper.optimizer.optimizer.state
    out['group_lrs'] = sorted((g['lr'], g['weight_decay'])
                              for g in s1.optim_wrapper.optimizer.param_groups)
    losses = _train(s1, batches[:2], rank)
    numel = torch.tensor([sum(st['exp_avg'].numel() for st in states.values())])
    out['local_state_numel'] = int(numel)
    dist.all_reduce(numel)
    out['state_numel'] = int(numel)
    s1.save_checkpoint(osp.join(tmp, 'work1', 'ckpt_2.pth'),
                       extra_ckpt=dict(meta=dict(iter=2, epoch=0)))
    losses += _train(s1, batches[2:], rank)
    out['losses'] = losses
    s1.export_consolidated(osp.join(tmp, 'full_a.pth'), meta=dict(iter=STEPS))
    s1.save_checkpoint(osp.join(tmp, 'work1', 'ckpt_4.pth'))

    s2 = _strategy(stage, osp.join(tmp, 'work2'))
    _prepare(s2, seed=7)
    extra = s2.resume(osp.join(tmp, 'work1', 'ckpt_2.pth'))
    out['resumed_iter'] = extra['meta']['iter']
    out['resumed_losses'] = _train(s2, batches[2:], rank)
    s2.export_consolidated(osp.join(tmp, 'full_b.pth'))
    strict_error = None
    try:
        s2.load_checkpoint(osp.join(tmp, 'partial.pth'), strict=True)
    except RuntimeError as e:
        strict_error = str(e)
    out['strict_error'] = strict_error
    if rank == 0:
        torch.save(out, osp.join(tmp, 'results.pth'))


@pytest.fixture(scope='module', params=[1, 2, 3], ids=lambda s: f'zero{s}')
def zero_run(request, tmp_path_factory):
    stage = request.param
    tmp = str(tmp_path_factory.mktemp(f'zero{stage}'))
    torch.manual_seed(0)
    init = ToyClassifier(with_cp=False)
    init.init_weights()
    init_sd = {k: v.clone() for k, v in init.state_dict().items()}
    torch.save({'meta': {}, 'state_dict': {f'module.{k}': v for k, v in init_sd.items()}},
               osp.join(tmp, 'init.pth'))
    torch.save({'state_dict': {'head.weight': torch.ones(5, 64), 'extra.w': torch.ones(1)}},
               osp.join(tmp, 'partial.pth'))
    spawn(_worker, free_port(), tmp, stage, timeout=300.0)
    results = torch.load(osp.join(tmp, 'results.pth'), weights_only=False)
    return dict(stage=stage, tmp=tmp, dist=results, init=init_sd, ref=_reference(init_sd))


def test_config_piece_reaches_deepspeed(zero_run):
    res = zero_run['dist']
    assert res['zero_stage'] == zero_run['stage']
    assert res['bf16'] is True
    assert res['gradient_clipping'] == OPTIM['clip_grad']['max_norm']  # from the optim_wrapper


def test_load_from_single_file_sets_master_weights(zero_run):
    """Trained parameters load exactly (float32 master copy); frozen ones live in bf16."""
    loaded, init = zero_run['dist']['loaded'], zero_run['init']
    assert sorted(loaded) == sorted(init)
    for k, v in init.items():
        if k in FROZEN:
            torch.testing.assert_close(loaded[k], v.bfloat16().float(), atol=0, rtol=0)
        else:
            assert torch.equal(loaded[k], v.float()), k


def test_layer_decay_groups_survive(zero_run):
    import backbones  # noqa: F401
    from mmengine.optim import build_optim_wrapper
    ref = build_optim_wrapper(ToyClassifier(), dict(OPTIM))
    # the scheduler's warm-up factor 0.5 is applied at the first step in both
    expected = sorted((g['lr'] * SCHEDULER['start_factor'], g['weight_decay'])
                      for g in ref.optimizer.param_groups)
    got = zero_run['dist']['group_lrs']
    assert len(got) == len(expected)
    assert [x for g in got for x in g] == pytest.approx([x for g in expected for x in g])
    assert len({lr for lr, _ in expected}) > 2  # several decayed lrs, not one


def test_frozen_params_have_no_optimizer_state(zero_run):
    model = ToyClassifier()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    total = zero_run['dist']['state_numel']
    assert trainable <= total < trainable + frozen // 10, (total, trainable, frozen)
    # ZeRO shards the states: each rank holds about half
    assert zero_run['dist']['local_state_numel'] < 0.6 * total


def test_bf16_losses_follow_single_process_fp32(zero_run):
    torch.testing.assert_close(torch.tensor(zero_run['dist']['losses'], dtype=torch.float64),
                               torch.tensor(zero_run['ref']['losses'], dtype=torch.float64),
                               atol=3e-2, rtol=3e-2)


def test_resume_continues_identically(zero_run):
    res = zero_run['dist']
    assert res['resumed_iter'] == 2
    torch.testing.assert_close(torch.tensor(res['resumed_losses']),
                               torch.tensor(res['losses'][2:]), atol=1e-6, rtol=1e-6)
    a = torch.load(osp.join(zero_run['tmp'], 'full_a.pth'), weights_only=True)
    b = torch.load(osp.join(zero_run['tmp'], 'full_b.pth'), weights_only=True)
    _assert_state_close(a['state_dict'], b['state_dict'], atol=1e-6)


def test_consolidated_export_loads_in_one_process(zero_run):
    from mmengine.runner import load_checkpoint
    model = ToyClassifier()
    ckpt = load_checkpoint(model, osp.join(zero_run['tmp'], 'full_a.pth'), strict=True)
    assert ckpt['meta']['iter'] == STEPS
    # the float32 master weights trained: they moved away from init and stay near the fp32
    # single-process run (bf16 compute)
    last = zero_run['ref']['states'][-1]
    moved = max(float((model.state_dict()[k] - zero_run['init'][k]).abs().max())
                for k in last if k not in FROZEN)
    assert moved > 1e-3
    _assert_state_close(model.state_dict(), last, atol=5e-3)


def test_offline_consolidation_matches_live_export(zero_run):
    from engine.checkpoints import is_complete_checkpoint
    from engine.checkpoints import consolidate_checkpoint, is_deepspeed_checkpoint
    folder = osp.join(zero_run['tmp'], 'work1', 'ckpt_4.pth')
    assert is_deepspeed_checkpoint(folder) and is_complete_checkpoint(folder)
    out = consolidate_checkpoint(folder, osp.join(zero_run['tmp'], 'offline.pth'))
    live = torch.load(osp.join(zero_run['tmp'], 'full_a.pth'), weights_only=True)
    _assert_state_close(out['state_dict'], live['state_dict'], atol=0)


def test_strict_load_names_the_keys(zero_run):
    err = zero_run['dist']['strict_error']
    assert err and 'unexpected key in source state_dict: extra.w' in err
    assert 'missing keys in source state_dict: ' in err and 'head.bias' in err
