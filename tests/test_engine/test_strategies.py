"""FSDP2 / DeepSpeed strategies: configs, and FSDP2 on 2 gloo CPU processes against one process.

The distributed runs are module-scoped fixtures (one spawn of 2 ranks each); the tests read
their results. A tiny InternViT (64 wide, 2 blocks) + linear head is trained on fixed batches:
each rank takes half of every batch, the single-process reference the whole batch.
"""
import glob
import importlib.util
import os
import os.path as osp
import socket
import time

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.model import BaseModel

from backbones import InternViT
from engine.optimizers.layer_decay import get_layer_id

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
STRATEGY_DIR = osp.join(ROOT, 'configs', '_base_', 'strategies')
TINY = dict(embed_dims=64, num_layers=2, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
WORLD = 2
PER_RANK = 2
STEPS = 4
OPTIM = dict(type='OptimWrapper',
             optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
             constructor='InternViTLayerDecayOptimizerConstructor',
             paramwise_cfg=dict(num_layers=2, layer_decay_rate=0.5),
             clip_grad=dict(max_norm=1.0))
SCHEDULER = dict(type='LinearLR', start_factor=0.5, by_epoch=False, begin=0, end=STEPS)
FROZEN_PREFIX = 'backbone.patch_embed.'


class ToyClassifier(BaseModel):
    """InternViT (64 wide, 2 blocks) + mean pool + linear head; the stem is frozen."""

    def __init__(self, with_cp: bool = True, frozen_backbone: bool = False) -> None:
        super().__init__()
        frozen = dict(frozen=True, frozen_dtype='bfloat16') if frozen_backbone else {}
        self.backbone = InternViT(arch=TINY, img_size=28, out_indices=(1,), with_cp=with_cp,
                                  **frozen)
        self.head = nn.Linear(64, 5)
        self.backbone.patch_embed.requires_grad_(False)

    def forward(self, inputs, labels=None, mode='tensor'):
        logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
        if mode == 'loss':
            return dict(loss=F.cross_entropy(logits, labels))
        return logits


def make_batches():
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(WORLD * PER_RANK, 3, 28, 28, generator=g),
             torch.randint(0, 5, (WORLD * PER_RANK,), generator=g)) for _ in range(STEPS)]


def probe_batch():
    return torch.randn(3, 3, 28, 28, generator=torch.Generator().manual_seed(9))


def rank_batch(batch, rank):
    x, y = batch
    sl = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
    return dict(inputs=x[sl], labels=y[sl])


def full_batch(batch):
    return dict(inputs=batch[0], labels=batch[1])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def spawn(fn, *args, nprocs: int = WORLD, timeout: float = 240.0) -> None:
    """Run ``fn(rank, *args)`` on ``nprocs`` spawned processes; fail (not hang) after
    ``timeout`` seconds."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method='spawn')
    deadline = time.time() + timeout
    while not ctx.join(timeout=max(1.0, deadline - time.time())):
        if time.time() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.terminate()
            pytest.fail(f'{fn.__name__} did not finish within {timeout} s')


def _init_env(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(WORLD), OMP_NUM_THREADS='1')
    torch.set_num_threads(1)


def _strategy(work_dir, **kwargs):
    from engine.strategies import FSDP2Strategy
    return FSDP2Strategy(work_dir=work_dir, env_kwargs=dict(
        launcher='pytorch', dist_cfg=dict(backend='gloo'), randomness=dict(seed=0)), **kwargs)


def _train(strategy, batches, rank):
    losses = []
    for batch in batches:
        log_vars = strategy.model.train_step(rank_batch(batch, rank), strategy.optim_wrapper)
        for s in strategy.param_schedulers:
            s.step()
        losses.append(float(log_vars['loss'].detach()))
    return losses


def _gather_mean(values):
    t = torch.tensor(values, dtype=torch.float64)
    torch.distributed.all_reduce(t)
    return (t / WORLD).tolist()


def _prepare(strategy, seed=123):
    torch.manual_seed(seed)  # weights come from the loaded checkpoint, not from this init
    return strategy.prepare(ToyClassifier(), optim_wrapper=dict(OPTIM),
                            param_scheduler=dict(SCHEDULER),
                            dispatch_kwargs=dict(max_iters=STEPS, epoch_length=STEPS))


def _strategy_worker(rank, port, tmp):
    """Phase 1: fp32 full shard from init.pth, 2 steps, sharded save, 2 steps, export.
    Phase 2: fresh model + strategy, resume, last 2 steps, export.
    Phase 3: bf16 mixed precision, shard-grad-op, 2 steps from init.pth; then load_from the
    sharded folder."""
    _init_env(rank, port)
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict
    batches = make_batches()
    out = {}

    s1 = _strategy(osp.join(tmp, 'work1'))
    _prepare(s1)
    s1.load_checkpoint(osp.join(tmp, 'init.pth'), strict=True)
    names = {id(p): n for n, p in s1.model.named_parameters()}
    out['lrs'] = {names[id(p)]: (g['lr'], g['weight_decay'])
                  for g in s1.optim_wrapper.optimizer.param_groups for p in g['params']}
    out['param_types'] = {n: type(p).__name__ for n, p in s1.model.named_parameters()}
    losses = _train(s1, batches[:2], rank)
    s1.save_checkpoint(osp.join(tmp, 'ckpt_2.pth'), extra_ckpt=dict(meta=dict(iter=2, epoch=0)))
    losses += _train(s1, batches[2:], rank)
    out['losses'] = _gather_mean(losses)
    out['optim_state_names'] = sorted(
        get_optimizer_state_dict(s1.model, s1.optim_wrapper.optimizer)['state'])
    out['local_state_names'] = sorted(
        names[id(p)] for p in s1.optim_wrapper.optimizer.state)
    out['lr_after'] = [g['lr'] for g in s1.optim_wrapper.optimizer.param_groups]
    s1.export_consolidated(osp.join(tmp, 'full_a.pth'), meta=dict(iter=STEPS))
    s1.model.eval()
    with torch.no_grad():  # the sharded model's predictions on a fixed batch (same on both ranks)
        out['predictions'] = s1.model(probe_batch()).detach().clone()
    s1.model.train()

    s2 = _strategy(osp.join(tmp, 'work2'))
    _prepare(s2, seed=7)
    extra = s2.resume(osp.join(tmp, 'ckpt_2.pth'))
    out['resumed_meta'] = {k: extra['meta'][k] for k in ('iter', 'world_size', 'strategy')}
    out['resumed_sd'] = s2.full_model_state_dict()
    out['resumed_losses'] = _gather_mean(_train(s2, batches[2:], rank))
    out['lr_after_resume'] = [g['lr'] for g in s2.optim_wrapper.optimizer.param_groups]
    out['base_lr_after'] = s1.optim_wrapper.get_lr()['base_lr']
    out['base_lr_after_resume'] = s2.optim_wrapper.get_lr()['base_lr']
    s2.export_consolidated(osp.join(tmp, 'full_b.pth'))

    s3 = _strategy(osp.join(tmp, 'work3'), reshard_after_forward=False,
                   mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'))
    _prepare(s3, seed=5)
    s3.load_checkpoint(osp.join(tmp, 'init.pth'), strict=True)
    out['bf16_losses'] = _gather_mean(_train(s3, batches[:2], rank))
    out['bf16_param_dtypes'] = sorted({str(p.dtype) for p in s3.model.parameters()})
    s3.load_checkpoint(osp.join(tmp, 'ckpt_2.pth'))
    out['loaded_sharded_sd'] = s3.full_model_state_dict()
    if rank == 0:
        torch.save(out, osp.join(tmp, 'results.pth'))


def _reference(init_sd):
    """Single-process training on the whole batches; losses and state dicts per step."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    import backbones  # noqa: F401  (registers the layer-decay constructor)
    model = ToyClassifier()
    model.load_state_dict(init_sd)
    wrapper = build_optim_wrapper(model, dict(OPTIM))
    scheduler = PARAM_SCHEDULERS.build(dict(SCHEDULER), default_args=dict(optimizer=wrapper))
    names = {id(p): n for n, p in model.named_parameters()}
    lrs = {names[id(p)]: (g['lr'], g['weight_decay'])
           for g in wrapper.optimizer.param_groups for p in g['params']}
    losses, states = [], []
    for batch in make_batches():
        losses.append(float(model.train_step(full_batch(batch), wrapper)['loss'].detach()))
        scheduler.step()
        states.append({k: v.clone() for k, v in model.state_dict().items()})
    return dict(losses=losses, states=states, lrs=lrs, model=model)


@pytest.fixture(scope='module')
def fsdp2_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('fsdp2'))
    torch.manual_seed(0)
    init = ToyClassifier()
    init.init_weights()
    init_sd = {k: v.clone() for k, v in init.state_dict().items()}
    torch.save({'meta': {}, 'state_dict': init_sd}, osp.join(tmp, 'init.pth'))
    spawn(_strategy_worker, free_port(), tmp)
    results = torch.load(osp.join(tmp, 'results.pth'), weights_only=False)
    return dict(tmp=tmp, dist=results, ref=_reference(init_sd))


def _assert_state_close(a, b, atol=1e-5):
    assert sorted(a) == sorted(b)
    for k in a:
        torch.testing.assert_close(a[k].float(), b[k].float(), atol=atol, rtol=1e-4, msg=k)


# --------------------------------------------------------------------------- fast
def test_strategies_registered():
    import engine.strategies  # noqa: F401
    from mmengine.registry import FUNCTIONS, HOOKS, STRATEGIES
    assert STRATEGIES.get('FSDP2Strategy') is not None
    assert STRATEGIES.get('DeepSpeedZeroStrategy') is not None
    assert HOOKS.get('ExportConsolidatedHook') is not None
    assert FUNCTIONS.get('internvit_block_auto_wrap_policy') is not None


@pytest.mark.parametrize('name, runner, strategy', [
    ('ddp', 'Runner', None),
    ('fsdp2_full_shard', 'FlexibleRunner', 'FSDP2Strategy'),
    ('fsdp2_shard_grad_op', 'FlexibleRunner', 'FSDP2Strategy'),
    ('fsdp1_full_shard', 'FlexibleRunner', 'FSDPStrategy'),
    ('deepspeed_zero1', 'FlexibleRunner', 'DeepSpeedZeroStrategy'),
    ('deepspeed_zero2', 'FlexibleRunner', 'DeepSpeedZeroStrategy'),
    ('deepspeed_zero3', 'FlexibleRunner', 'DeepSpeedZeroStrategy'),
])
def test_strategy_pieces_parse(name, runner, strategy):
    cfg = Config.fromfile(osp.join(STRATEGY_DIR, f'{name}.py'))
    assert cfg.runner_type == runner
    assert (cfg.strategy['type'] if cfg.strategy else None) == strategy
    if strategy == 'FSDP2Strategy':
        assert cfg.strategy.reshard_after_forward == (name == 'fsdp2_full_shard')
        assert cfg.strategy.mixed_precision == dict(param_dtype='bfloat16',
                                                    reduce_dtype='float32')
    if strategy == 'DeepSpeedZeroStrategy':
        assert cfg.strategy.zero_optimization.stage == int(name[-1])
        assert cfg.strategy.bf16 == dict(enabled=True)


def test_strategy_piece_merges_into_a_config(tmp_path):
    """A config made of a training config and a strategy piece (keys must not collide)."""
    (tmp_path / 'train.py').write_text(
        "model = dict(type='X')\n"
        "optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', "
        "optimizer=dict(type='AdamW', lr=4e-5))\n")
    (tmp_path / 'combo.py').write_text(
        f"_base_ = ['./train.py', '{osp.join(STRATEGY_DIR, 'fsdp2_full_shard.py')}']\n")
    cfg = Config.fromfile(str(tmp_path / 'combo.py'))
    assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


@pytest.mark.parametrize('stage', [1, 2, 3])
def test_deepspeed_without_package_is_a_clear_error(stage, monkeypatch):
    from mmengine.registry import STRATEGIES

    import engine.strategies.deepspeed
    monkeypatch.setattr(engine.strategies.deepspeed, '_deepspeed_available', lambda: False)
    cfg = Config.fromfile(osp.join(STRATEGY_DIR, f'deepspeed_zero{stage}.py'))
    with pytest.raises(ImportError, match=r'needs the deepspeed package.*fsdp2_full_shard'):
        STRATEGIES.build(cfg.strategy.to_dict())


def test_deepspeed_optimizers_registered_with_a_current_deepspeed():
    """MMEngine 0.10.7 imports DeepSpeed's removed 1-bit optimizers; ours registers what
    exists, twice without complaint."""
    pytest.importorskip('deepspeed')
    from mmengine.registry import OPTIMIZERS

    from engine.strategies import register_deepspeed_optimizers
    names = register_deepspeed_optimizers()
    assert {'FusedAdam', 'DeepSpeedCPUAdam', 'FusedLamb'} <= set(names)
    assert register_deepspeed_optimizers() == names
    assert OPTIMIZERS.get('FusedAdam') is not None


def test_to_deepspeed_optim_wrapper():
    from engine.strategies import to_deepspeed_optim_wrapper
    wrapper, ds = to_deepspeed_optim_wrapper(dict(
        type='AmpOptimWrapper', dtype='bfloat16', loss_scale='dynamic',
        optimizer=dict(type='AdamW', lr=4e-5),
        constructor='InternViTLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95), clip_grad=dict(max_norm=3.0),
        accumulative_counts=2))
    assert wrapper == dict(type='DeepSpeedOptimWrapper', optimizer=dict(type='AdamW', lr=4e-5),
                           constructor='InternViTLayerDecayOptimizerConstructor',
                           paramwise_cfg=dict(num_layers=48, layer_decay_rate=0.95))
    assert ds == dict(bf16=dict(enabled=True), gradient_clipping=3.0,
                      gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match='global norm'):
        to_deepspeed_optim_wrapper(dict(optimizer=dict(type='SGD', lr=0.1),
                                        clip_grad=dict(type='value', clip_value=1.0)))


def test_modules_to_shard_and_fsdp1_policy():
    from backbones.layers import Block
    from engine.strategies import internvit_block_auto_wrap_policy, modules_to_shard
    model = ToyClassifier()
    assert [n for n, _ in modules_to_shard(model)] == ['backbone.blocks.0', 'backbone.blocks.1']
    assert [n for n, _ in modules_to_shard(model, ['Linear'])][-1] == 'head'
    assert [n for n, _ in modules_to_shard(model, ['backbones.layers.Mlp'])] == [
        'backbone.blocks.0.mlp', 'backbone.blocks.1.mlp']
    with pytest.raises(ValueError, match='cannot import'):
        modules_to_shard(model, ['backbones.layers.NoSuchBlock'])
    block = model.backbone.blocks[0]
    assert internvit_block_auto_wrap_policy(model, recurse=True, nonwrapped_numel=0)
    assert internvit_block_auto_wrap_policy(block, recurse=False, nonwrapped_numel=0)
    assert not internvit_block_auto_wrap_policy(model.head, recurse=False, nonwrapped_numel=0)
    assert isinstance(block, Block)


def test_mixed_precision_config_is_checked():
    from engine.strategies import build_mp_policy
    policy = build_mp_policy(dict(param_dtype='bfloat16', reduce_dtype='float32'))
    assert policy.param_dtype == torch.bfloat16 and policy.reduce_dtype == torch.float32
    with pytest.raises(ValueError, match='unknown keys'):
        build_mp_policy(dict(param_dtype='bfloat16', buffer_dtype='float32'))
    with pytest.raises(ValueError, match='unknown dtype'):
        build_mp_policy(dict(param_dtype='bf8'))


def test_shard_model_refuses_mixed_trainable_dtypes():
    from engine.strategies import shard_model
    model = ToyClassifier()
    model.head.double()
    with pytest.raises(ValueError, match=r"root group.*mix dtypes \['torch.float32', "
                                         r"'torch.float64'\]"):
        shard_model(model)


def _single_process_worker(rank, tmp):
    """No launcher: FSDP2Strategy makes a one-rank group. Frozen bf16 backbone, fp32 head."""
    torch.set_num_threads(1)
    import torch.distributed as dist

    from engine.strategies import FSDP2Strategy
    strategy = FSDP2Strategy(work_dir=tmp, env_kwargs=dict(launcher='none'),
                             mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32'))
    strategy.prepare(ToyClassifier(frozen_backbone=True), optim_wrapper=dict(OPTIM),
                     dispatch_kwargs=dict(max_iters=2))
    before = strategy.full_model_state_dict()
    for batch in make_batches()[:2]:
        strategy.model.train_step(full_batch(batch), strategy.optim_wrapper)
    after = strategy.full_model_state_dict()
    names = {id(p): n for n, p in strategy.model.named_parameters()}
    state_names = sorted(names[id(p)] for p in strategy.optim_wrapper.optimizer.state)
    # load_from a partial file: head.weight loaded, head.bias missing, one unexpected key
    partial = osp.join(tmp, 'partial.pth')
    torch.save({'state_dict': {'module.head.weight': torch.ones(5, 64), 'extra.w': torch.ones(1)}},
               partial)
    strict_error = None
    try:
        strategy.load_checkpoint(partial, strict=True)
    except RuntimeError as e:
        strict_error = str(e)
    strategy.load_checkpoint(partial)
    loaded = strategy.full_model_state_dict()
    torch.save(dict(world_size=dist.get_world_size(), before=before, after=after,
                    state_names=state_names, strict_error=strict_error, loaded=loaded),
               osp.join(tmp, 'single.pth'))


@pytest.mark.slow
def test_fsdp2_single_process_frozen_bf16_backbone(tmp_path):
    spawn(_single_process_worker, str(tmp_path), nprocs=1)
    res = torch.load(tmp_path / 'single.pth', weights_only=False)
    assert res['world_size'] == 1
    assert res['state_names'] == ['head.bias', 'head.weight']
    for k, v in res['before'].items():
        assert v.dtype == (torch.bfloat16 if k.startswith('backbone.') else torch.float32), k
        assert torch.equal(v, res['after'][k]) == k.startswith('backbone.'), k
    assert 'unexpected key in source state_dict: extra.w' in res['strict_error']
    assert 'missing keys in source state_dict: ' in res['strict_error']
    assert torch.equal(res['loaded']['head.weight'], torch.ones(5, 64))  # 'module.' stripped
    assert torch.equal(res['loaded']['head.bias'], res['after']['head.bias'])  # kept
    assert torch.equal(res['loaded']['backbone.pos_embed'], res['after']['backbone.pos_embed'])


# --------------------------------------------------------------------------- FSDP2, 2 ranks
@pytest.mark.slow
def test_fsdp2_loss_trajectory_matches_single_process(fsdp2_run):
    dist_losses, ref = fsdp2_run['dist']['losses'], fsdp2_run['ref']['losses']
    assert len(dist_losses) == STEPS
    torch.testing.assert_close(torch.tensor(dist_losses, dtype=torch.float64),
                               torch.tensor(ref, dtype=torch.float64), atol=1e-5, rtol=1e-5)
    first, last = fsdp2_run['ref']['states'][0], fsdp2_run['ref']['states'][-1]
    assert not torch.equal(first['head.weight'], last['head.weight'])  # it did train


@pytest.mark.slow
def test_fsdp2_parameters_are_sharded(fsdp2_run):
    types = fsdp2_run['dist']['param_types']
    assert types and set(types.values()) == {'DTensor'}
    assert 'backbone.blocks.1.attn.qkv.weight' in types  # names unchanged by sharding


@pytest.mark.slow
def test_fsdp2_consolidated_export_matches_single_process(fsdp2_run):
    from mmengine.runner import load_checkpoint
    model = ToyClassifier()
    ckpt = load_checkpoint(model, osp.join(fsdp2_run['tmp'], 'full_a.pth'), strict=True)
    assert ckpt['meta']['iter'] == STEPS
    _assert_state_close(model.state_dict(), fsdp2_run['ref']['states'][-1])


@pytest.mark.slow
def test_fsdp2_export_predicts_like_the_sharded_model(fsdp2_run):
    """One process loads the consolidated file (strict) and predicts what the 2 sharded ranks
    predicted."""
    from mmengine.runner import load_checkpoint
    model = ToyClassifier().eval()
    load_checkpoint(model, osp.join(fsdp2_run['tmp'], 'full_a.pth'), strict=True)
    with torch.no_grad():
        logits = model(probe_batch())
    torch.testing.assert_close(logits, fsdp2_run['dist']['predictions'], atol=1e-6, rtol=1e-5)
    assert logits.argmax(1).tolist() == fsdp2_run['dist']['predictions'].argmax(1).tolist()


@pytest.mark.slow
def test_fsdp2_layer_decay_lrs_survive_sharding(fsdp2_run):
    lrs, ref = fsdp2_run['dist']['lrs'], fsdp2_run['ref']['lrs']
    assert lrs == ref
    # lr per name follows the layer: base lr 1e-3, warm-up factor 0.5, decay 0.5 per layer
    for name, (lr, _) in lrs.items():
        assert lr == pytest.approx(1e-3 * 0.5 * 0.5 ** (2 + 1 - get_layer_id(name, 2))), name
    assert lrs['backbone.blocks.0.attn.qkv.weight'][1] == 0.05
    assert lrs['backbone.blocks.0.norm1.weight'][1] == 0.0


@pytest.mark.slow
def test_fsdp2_frozen_params_have_no_optimizer_state(fsdp2_run):
    res = fsdp2_run['dist']
    trainable = {n for n, p in ToyClassifier().named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith(FROZEN_PREFIX) for n in trainable)
    assert set(res['optim_state_names']) == trainable
    assert set(res['local_state_names']) == trainable
    assert not any(n.startswith(FROZEN_PREFIX) for n in res['lrs'])


@pytest.mark.slow
def test_fsdp2_resume_continues_identically(fsdp2_run):
    res, ref = fsdp2_run['dist'], fsdp2_run['ref']
    assert res['resumed_meta'] == dict(iter=2, world_size=WORLD, strategy='FSDP2Strategy')
    _assert_state_close(res['resumed_sd'], ref['states'][1])
    torch.testing.assert_close(torch.tensor(res['resumed_losses'], dtype=torch.float64),
                               torch.tensor(res['losses'][2:], dtype=torch.float64),
                               atol=1e-6, rtol=1e-6)
    assert res['lr_after_resume'] == pytest.approx(res['lr_after'])
    assert res['base_lr_after_resume'] == pytest.approx(res['base_lr_after'])
    from mmengine.runner import CheckpointLoader
    a = CheckpointLoader.load_checkpoint(osp.join(fsdp2_run['tmp'], 'full_a.pth'))
    b = CheckpointLoader.load_checkpoint(osp.join(fsdp2_run['tmp'], 'full_b.pth'))
    _assert_state_close(a['state_dict'], b['state_dict'], atol=1e-6)


@pytest.mark.slow
def test_fsdp2_sharded_checkpoint_folder(fsdp2_run):
    from engine.checkpoints import EXTRA_FILE, consolidate_checkpoint, is_sharded_checkpoint
    folder = osp.join(fsdp2_run['tmp'], 'ckpt_2.pth')
    assert is_sharded_checkpoint(folder)
    assert len(glob.glob(osp.join(folder, '*.distcp'))) == WORLD
    extra = torch.load(osp.join(folder, EXTRA_FILE), weights_only=True)
    assert {'meta', 'param_schedulers', 'optimizer_param_groups'} <= set(extra)
    # offline consolidation, no process group: the weights after step 2
    out = consolidate_checkpoint(folder, osp.join(fsdp2_run['tmp'], 'offline.pth'))
    _assert_state_close(out['state_dict'], fsdp2_run['ref']['states'][1])


@pytest.mark.slow
def test_fsdp2_load_from_sharded_folder(fsdp2_run):
    _assert_state_close(fsdp2_run['dist']['loaded_sharded_sd'], fsdp2_run['ref']['states'][1])


@pytest.mark.slow
def test_fsdp2_bf16_mixed_precision_shard_grad_op(fsdp2_run):
    res, ref = fsdp2_run['dist'], fsdp2_run['ref']
    assert res['bf16_param_dtypes'] == ['torch.float32']  # sharded master weights stay fp32
    torch.testing.assert_close(torch.tensor(res['bf16_losses'], dtype=torch.float64),
                               torch.tensor(ref['losses'][:2], dtype=torch.float64),
                               atol=3e-2, rtol=3e-2)


# --------------------------------------------------------------------------- FlexibleRunner
class ToyDataset(torch.utils.data.Dataset):
    metainfo = dict(classes=tuple('abcde'))

    def __init__(self, n: int = 8) -> None:
        g = torch.Generator().manual_seed(2)
        self.x = torch.randn(n, 3, 28, 28, generator=g)
        self.y = torch.randint(0, 5, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


def _toy_accuracy():
    from mmengine.evaluator import BaseMetric

    class ToyAccuracy(BaseMetric):

        def process(self, data_batch, data_samples):
            for logits, label in zip(data_samples, data_batch['labels']):
                self.results.append(float(logits.argmax() == label))

        def compute_metrics(self, results):
            return dict(accuracy=sum(results) / len(results))

    return ToyAccuracy()


def _runner(tmp, phase, **kwargs):
    from mmengine.evaluator import Evaluator
    from mmengine.runner import FlexibleRunner
    loader = dict(dataset=ToyDataset(), sampler=dict(type='DefaultSampler', shuffle=False),
                  batch_size=PER_RANK, collate_fn=dict(type='default_collate'), num_workers=0)
    torch.manual_seed(0)
    return FlexibleRunner(
        model=ToyClassifier(), work_dir=osp.join(tmp, f'work{phase}'),
        experiment_name=f'fsdp2_runner_{phase}',
        train_dataloader=loader, val_dataloader=dict(loader), val_cfg=dict(),
        val_evaluator=Evaluator(_toy_accuracy()),
        optim_wrapper=dict(OPTIM, type='AmpOptimWrapper', dtype='bfloat16'),
        param_scheduler=dict(SCHEDULER),
        train_cfg=dict(by_epoch=False, max_iters=STEPS, val_interval=2),
        strategy=dict(type='FSDP2Strategy', reshard_after_forward=False,
                      mixed_precision=dict(param_dtype='bfloat16', reduce_dtype='float32')),
        launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl')),  # gloo on the CPU
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        custom_hooks=[dict(type='ExportConsolidatedHook', filename='final.pth')],
        randomness=dict(seed=0), **kwargs)


def _runner_worker(rank, port, tmp):
    """Phase 1: FlexibleRunner trains 4 iterations (checkpoints at 2 and 4, validation at 2 and
    4, consolidated export at the end). Phase 2: a new runner resumes from iteration 2."""
    _init_env(rank, port)
    import engine.strategies  # noqa: F401
    out = {}
    runner = _runner(tmp, 1)
    runner.train()
    out['grad_norm'] = runner.message_hub.get_scalar('train/grad_norm').current()
    out['accuracy'] = runner.message_hub.get_scalar('val/accuracy').current()
    out['optim_wrapper'] = type(runner.optim_wrapper).__name__
    runner = _runner(tmp, 2, resume=osp.join(tmp, 'work1', 'iter_2.pth'))
    runner.train()
    out['resumed_iter'] = runner.iter
    if rank == 0:
        torch.save(out, osp.join(tmp, 'runner_results.pth'))


@pytest.fixture(scope='module')
def runner_run(tmp_path_factory):
    tmp = str(tmp_path_factory.mktemp('fsdp2_runner'))
    spawn(_runner_worker, free_port(), tmp)
    return dict(tmp=tmp, out=torch.load(osp.join(tmp, 'runner_results.pth'), weights_only=False))


@pytest.mark.slow
def test_flexible_runner_trains_validates_and_checkpoints(runner_run):
    from engine.checkpoints import is_sharded_checkpoint
    work = osp.join(runner_run['tmp'], 'work1')
    out = runner_run['out']
    assert out['optim_wrapper'] == 'OptimWrapper'  # AmpOptimWrapper replaced: FSDP2 does bf16
    assert torch.isfinite(torch.tensor(out['grad_norm']))
    assert 0.0 <= out['accuracy'] <= 1.0
    assert is_sharded_checkpoint(osp.join(work, 'iter_2.pth'))
    assert is_sharded_checkpoint(osp.join(work, 'iter_4.pth'))
    with open(osp.join(work, 'last_checkpoint')) as f:
        assert f.read().strip() == osp.join(work, 'iter_4.pth')


@pytest.mark.slow
def test_flexible_runner_resume_and_consolidated_export(runner_run):
    from mmengine.runner import load_checkpoint
    assert runner_run['out']['resumed_iter'] == STEPS
    a, b = ToyClassifier(), ToyClassifier()
    meta = load_checkpoint(a, osp.join(runner_run['tmp'], 'work1', 'final.pth'), strict=True)
    load_checkpoint(b, osp.join(runner_run['tmp'], 'work2', 'final.pth'), strict=True)
    assert meta['meta']['iter'] == STEPS
    _assert_state_close(a.state_dict(), b.state_dict(), atol=1e-6)


def _resume_one_rank_worker(rank, tmp):
    """Resume the 2-rank checkpoint of iteration 2 on a single rank (no launcher)."""
    torch.set_num_threads(1)
    from engine.strategies import FSDP2Strategy
    strategy = FSDP2Strategy(work_dir=osp.join(tmp, 'work_one'),
                             env_kwargs=dict(launcher='none', randomness=dict(seed=0)))
    _prepare(strategy, seed=3)
    strategy.resume(osp.join(tmp, 'ckpt_2.pth'))
    losses = []
    for batch in make_batches()[2:]:
        log_vars = strategy.model.train_step(full_batch(batch), strategy.optim_wrapper)
        for s in strategy.param_schedulers:
            s.step()
        losses.append(float(log_vars['loss'].detach()))
    torch.save(dict(losses=losses, state=strategy.full_model_state_dict()),
               osp.join(tmp, 'one_rank.pth'))


@pytest.mark.slow
def test_fsdp2_resume_on_another_world_size(fsdp2_run):
    spawn(_resume_one_rank_worker, fsdp2_run['tmp'], nprocs=1)
    res = torch.load(osp.join(fsdp2_run['tmp'], 'one_rank.pth'), weights_only=False)
    ref = fsdp2_run['ref']
    torch.testing.assert_close(torch.tensor(res['losses'], dtype=torch.float64),
                               torch.tensor(ref['losses'][2:], dtype=torch.float64),
                               atol=1e-5, rtol=1e-5)
    _assert_state_close(res['state'], ref['states'][-1])


def test_train_py_strategy_flag_replaces_engine():
    import importlib.util
    import os.path as osp

    from mmengine.config import Config
    root = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
    spec = importlib.util.spec_from_file_location('train_cli', osp.join(root, 'tools', 'train.py'))
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    assert {'ddp', 'fsdp2_full_shard', 'deepspeed_zero1'} <= set(cli.STRATEGIES)
    cfg = Config(dict(runner_type='FlexibleRunner',
                      strategy=dict(type='FSDPStrategy', model_wrapper=dict(x=1))))
    cli.apply_strategy(cfg, 'fsdp2_full_shard')
    assert cfg.runner_type == 'FlexibleRunner' and cfg.strategy.type == 'FSDP2Strategy'
    assert 'model_wrapper' not in cfg.strategy
    cli.apply_strategy(cfg, 'ddp')
    assert cfg.runner_type == 'Runner' and 'strategy' not in cfg


# --------------------------------------------------------------------------- FSDP1 (CUDA only)
def _fsdp1_cpu_worker(rank, tmp):
    """FSDP1 from its config piece, on the CPU, as far as torch lets it: one gloo rank, the
    policy spied on, until FSDP moves the first wrapped unit to the GPU."""
    torch.set_num_threads(1)
    import traceback

    import torch.distributed as dist
    from mmengine.registry import FUNCTIONS, STRATEGIES

    import engine.strategies as strategies
    os.environ.update(RANK='0', LOCAL_RANK='0', WORLD_SIZE='1')
    dist.init_process_group('gloo', store=dist.HashStore(), rank=0, world_size=1)
    wrapped = []

    def spy(module, recurse, nonwrapped_numel, **kwargs):
        decision = strategies.internvit_block_auto_wrap_policy(module, recurse, nonwrapped_numel,
                                                               **kwargs)
        if not recurse and decision:
            wrapped.append(type(module).__name__)
        return decision

    FUNCTIONS.register_module(name='internvit_block_auto_wrap_policy', module=spy, force=True)
    cfg = Config.fromfile(osp.join(STRATEGY_DIR, 'fsdp1_full_shard.py')).strategy.to_dict()
    cfg.update(work_dir=tmp, env_kwargs=dict(launcher='pytorch', dist_cfg=dict(backend='gloo')))
    strategy = STRATEGIES.build(cfg)
    error = None
    try:
        strategy.prepare(ToyClassifier(), optim_wrapper=dict(OPTIM),
                         param_scheduler=dict(SCHEDULER),
                         dispatch_kwargs=dict(max_iters=STEPS, epoch_length=STEPS))
    except Exception as e:  # noqa: BLE001 (the expected stop: no GPU)
        error = (type(e).__name__, str(e), traceback.format_exc())
    torch.save(dict(strategy=type(strategy).__name__, wrapped=wrapped, error=error),
               osp.join(tmp, 'fsdp1.pth'))


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason='the GPU test runs FSDP1 for real')
def test_fsdp1_piece_reaches_fsdp_wrapping_on_the_cpu(tmp_path):
    spawn(_fsdp1_cpu_worker, str(tmp_path), nprocs=1)
    res = torch.load(tmp_path / 'fsdp1.pth', weights_only=False)
    assert res['strategy'] == 'FSDPStrategy'
    # FSDP1 asked our policy, and wrapped an InternViT block first; then it needed CUDA
    assert res['wrapped'] and res['wrapped'][0] == 'Block'
    kind, message, trace = res['error']
    assert '_recursive_wrap' in trace and ('NVIDIA' in message or 'accelerator' in message
                                           or 'CUDA' in message), trace


# --------------------------------------------------------------------------- safe DCP reading
def _dcp_folder(path):
    import torch.distributed.checkpoint as dcp

    from engine.checkpoints import EXTRA_FILE
    state = {'state_dict': {'w': torch.arange(6.0).reshape(2, 3), 'b': torch.ones(3)}}
    dcp.save(state, checkpoint_id=str(path), no_dist=True)
    torch.save({'meta': {'iter': 2}}, osp.join(path, EXTRA_FILE))
    return state


def test_sharded_folder_reads_through_the_allow_list(tmp_path):
    from engine.checkpoints import consolidate_checkpoint
    state = _dcp_folder(tmp_path / 'ckpt')
    out = consolidate_checkpoint(str(tmp_path / 'ckpt'), str(tmp_path / 'out.pth'))
    assert out['meta']['iter'] == 2
    for k, v in state['state_dict'].items():
        assert torch.equal(out['state_dict'][k], v)


@pytest.mark.parametrize('payload', ['RunsShell', 'RunsSubprocess', 'RunsEval'])
def test_crafted_dcp_metadata_is_refused_before_it_runs(tmp_path, payload):
    """torch's reader would ``pickle.load`` the .metadata; ours names the file and the global."""
    import pickle

    from engine.checkpoints import consolidate_checkpoint

    from tests.test_tools import _toy
    folder = tmp_path / 'ckpt'
    _dcp_folder(folder)
    marker = tmp_path / 'pwned'
    with open(folder / '.metadata', 'wb') as f:
        pickle.dump(getattr(_toy, payload)(marker), f)
    with pytest.raises(pickle.UnpicklingError, match=r'\.metadata names (posix|builtins|subprocess)\.'
                                        r'\w+, .*refusing to unpickle'):
        consolidate_checkpoint(str(folder), str(tmp_path / 'out.pth'))
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_pickled_entries_in_a_sharded_folder_are_refused(tmp_path):
    import pickle

    import torch.distributed.checkpoint as dcp

    from engine.checkpoints import EXTRA_FILE, consolidate_checkpoint
    folder = tmp_path / 'ckpt'
    dcp.save({'state_dict': {'w': torch.ones(2), 'note': {'any': 'object'}}},
             checkpoint_id=str(folder), no_dist=True)
    torch.save({'meta': {}}, osp.join(folder, EXTRA_FILE))
    with pytest.raises(pickle.UnpicklingError, match=r"non-tensor\) entries \['state_dict.note"):
        consolidate_checkpoint(str(folder), str(tmp_path / 'out.pth'))
