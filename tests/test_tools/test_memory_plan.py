"""Memory planner: a tiny arch against the analytic count, the tiny demo config against the
peak measured in a training step on the CPU, 6B parameter bytes per strategy, the strategy
pieces and their aliases, the CLI."""
import importlib.util
import os
import os.path as osp

import pytest
import torch

from backbones import count_parameters
from tools.analysis import memory_plan as mp

TINY = dict(embed_dims=64, num_layers=2, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
C, M, H, L = 64, 256, 4, 2
N = 4 * 4 + 1  # 56 px crop, patch 14, cls token
B = 2


def analytic_block_bytes(tokens, amp=False):
    """Bytes one bf16 InternViT block (RMSNorm, QK-norm, LayerScale, sdpa) saves for backward,
    per token: 4 RMSNorms (norm1, q_norm, k_norm, norm2) keep a float32 copy of their input
    (4 B x C), the bf16 normalised values (2 B x C) and a float32 rsqrt (4 B); the whole qkv
    output (6 B x C: v is a view of it); q, k, the attention output (= proj input), the qkv
    input, proj output (ls1 input), fc1 input and fc2 output (ls2 input), 2 B x C each; GELU
    input and fc2 input (2 B x M each); the attention's float32 log-sum-exp (4 B per head).

    ``amp``: float32 weights and a float32 residual stream under bf16 autocast (DDP). The same,
    except that norm1 and norm2, whose input is the float32 stream, keep that input itself and
    float32 normalised values (the cast back to the input dtype is a no-op): 8 B x C instead of
    6 B x C each. (The bf16 weight copies autocast saves are counted with the weights.)"""
    per_token = (4 * (4 + 2) + 6 + 7 * 2) * C + 2 * 2 * M + 4 * 4 + 4 * H
    if amp:
        per_token += 2 * (8 - 6) * C
    return tokens * per_token


def tiny_facts():
    return mp.facts_from_arch(TINY, 56, B, out_indices=[1])


def test_tiny_block_activations_match_analytic():
    facts = tiny_facts()
    assert facts.block_act['bf16'] == pytest.approx(B * analytic_block_bytes(N))
    assert facts.block_act['amp'] == pytest.approx(B * analytic_block_bytes(N, amp=True))
    assert facts.block_input == {'bf16': B * N * C * 2, 'amp': B * N * C * 4}
    maps = B * C * 4 * 4 * 4  # one float32 output map, whatever the precision
    assert facts.other_act == {'fp32': maps, 'amp': maps}
    for strategy, amp in (('fsdp', False), ('zero2', False), ('ddp', True),
                          ('fsdp1_full_shard', True)):
        block, stream = analytic_block_bytes(N, amp=amp), (4 if amp else 2)
        # FSDP1: autocast's bf16 copies of the weights of the blocks not in backward (their
        # forward saved them: uncached casts of the flat parameter's views)
        copies = 2 * (L - 1) * facts.largest_block if strategy == 'fsdp1_full_shard' else 0
        assert facts.activations(False, strategy) == pytest.approx(
            L * B * block + maps + copies)
        assert facts.activations(True, strategy) == pytest.approx(
            L * B * N * C * stream + B * block + maps)


def test_autocast_does_not_cache_casts_of_flat_parameter_views():
    """What the FSDP1 row assumes: autocast caches the bf16 copy of a leaf float32 parameter
    (DDP: one copy, however often it is used), not of a view of a flat parameter (FSDP1's
    ``use_orig_params`` forward): each use saves its own copy."""
    flat = torch.nn.Parameter(torch.randn(2 * C * C))
    leaf = torch.nn.Parameter(torch.randn(C, C))
    view = flat.split([C * C, C * C])[0].view(C, C)
    x = torch.randn(B, C, requires_grad=True)

    def twice(w):
        def run():
            with torch.autocast('cpu', dtype=torch.bfloat16):
                y = torch.nn.functional.linear(x, w)
                torch.nn.functional.linear(y, w)
        return mp.saved_tensor_bytes(run, exclude=[flat, leaf])

    inputs = 2 * B * C * 2  # the two linears' bf16 inputs
    assert twice(leaf) == inputs + C * C * 2
    assert twice(view) == inputs + 2 * C * C * 2


def test_tiny_parameter_counts():
    facts = tiny_facts()
    per_block = 4 * C * C + 2 * C * M + M + 8 * C  # qkv, proj, fc1, fc2, biases, norms, gammas
    assert facts.largest_block == per_block and facts.num_blocks == L
    assert facts.block_trainable == L * per_block
    assert facts.root_trainable == 3 * 14 * 14 * C + C + C + N * C  # patch embed, cls, pos
    assert facts.frozen == 0


def test_naive_attention_keeps_the_attention_matrix():
    a, b = mp.block_activation_fit(TINY, attn_impl='naive')
    a_sdpa, b_sdpa = mp.block_activation_fit(TINY)
    assert b_sdpa == 0
    assert b == pytest.approx(H * 2)  # one bf16 N x N matrix per head


@pytest.mark.parametrize('strategy', mp.STRATEGIES)
def test_tiny_plan_formulas(strategy):
    facts = tiny_facts()
    t, blk, root = facts.trainable, facts.largest_block, facts.root_trainable
    n = 2
    expected = {
        'ddp': (6 * t, 8 * t, 8 * t),
        'fsdp2_full_shard': (4 * t / n + 4 * blk + 4 * root, 4 * t / n + 6 * blk + 4 * root,
                             8 * t / n),
        'fsdp2_shard_grad_op': (4 * t / n + 2 * L * blk + 4 * root,
                                4 * t / n + 6 * blk + 4 * root, 8 * t / n),
        # two gathered fp32 blocks + one block's bf16 copies; fp32 root + its bf16 copies
        'fsdp1_full_shard': (4 * t / n + 10 * blk + 6 * root, 4 * t / n + 8 * blk + 4 * root,
                             8 * t / n),
        'deepspeed_zero1': (2 * t, 2 * t, 12 * t / n),
        'deepspeed_zero2': (2 * t, 2 * t / n, 12 * t / n),
        'deepspeed_zero3': (2 * t / n + 4 * blk, 2 * t / n, 12 * t / n),
    }[strategy]
    p = mp.plan(facts, strategy, n, overhead_gib=0)
    assert p.strategy == strategy
    assert (p.weights, p.grads, p.optim) == pytest.approx(expected)
    assert p.total_cp == pytest.approx(sum(expected) + facts.activations(True, strategy))
    assert p.total_nocp == pytest.approx(sum(expected) + facts.activations(False, strategy))


@pytest.fixture
def facts_6b(monkeypatch):
    # parameter bytes only: skip measuring a 3200-wide block
    monkeypatch.setattr(mp, 'block_activation_fit', lambda *a, **k: (0.0, 0.0))
    return mp.facts_from_arch('6b', 504, 2)


# Bytes per parameter on each GPU, by hand: (weights, grads, optimizer) as (replicated bytes,
# bytes sharded over the N GPUs), for AdamW (two float32 states) and bf16 compute.
BYTES_PER_PARAM = {
    # fp32 weights + autocast's bf16 copies; fp32 .grad + DDP's fp32 bucket; 2 fp32 states
    'ddp': ((4 + 2, 0), (4 + 4, 0), (8, 0)),
    # fp32 weights, grads and states, all sharded (plus the gathered block(s), below)
    'fsdp2_full_shard': ((0, 4), (0, 4), (0, 8)),
    'fsdp2_shard_grad_op': ((0, 4), (0, 4), (0, 8)),
    'fsdp1_full_shard': ((0, 4), (0, 4), (0, 8)),
    # bf16 weights and grads; fp32 master + 2 fp32 states sharded
    'deepspeed_zero1': ((2, 0), (2, 0), (0, 4 + 8)),
    'deepspeed_zero2': ((2, 0), (0, 2), (0, 4 + 8)),
    'deepspeed_zero3': ((0, 2), (0, 2), (0, 4 + 8)),
}
# Model state per GPU for InternViT-6B alone on 8 GPUs, in GB (1e9 B), from 5.9 B parameters
# (blocks of 122.9 M, 2.7 M in the stem): DDP 22 B/param; FSDP2 16 B/param / 8 plus two
# gathered bf16 blocks, one block's bf16 grad + fp32 reduce buffer (10 B x 122.9 M) and the
# float32 stem's weights and grads; shard-grad-op also keeps all 48 bf16 blocks (2 B/param);
# FSDP1 16 B/param / 8 plus two gathered fp32 blocks and one block's bf16 autocast copies, one
# block's fp32 grads and the flat fp32 grad they are concatenated into (18 B x 122.9 M) and
# the float32 stem's weights, bf16 copies and grads (10 B x 2.7 M); ZeRO-1 4 + 12/8 B/param;
# ZeRO-2 2 + 14/8; ZeRO-3 16/8 plus two gathered bf16 blocks.
GB_6B_ON_8 = {'ddp': 129.9, 'fsdp2_full_shard': 13.1, 'fsdp2_shard_grad_op': 24.4,
              'fsdp1_full_shard': 14.1, 'deepspeed_zero1': 32.5, 'deepspeed_zero2': 22.1,
              'deepspeed_zero3': 12.3}


def test_6b_parameter_bytes(facts_6b):
    # pos_embed is a parameter at the crop grid (504 / 14 = 36: 1 + 36 * 36 tokens)
    params = count_parameters('6b', img_size=504)
    assert abs(params - 5.9e9) / 5.9e9 < 0.002
    assert facts_6b.trainable == params and facts_6b.num_blocks == 48
    blk, root = facts_6b.largest_block, facts_6b.root_trainable
    assert 48 * blk + root == params and abs(blk - 122.9e6) < 0.1e6
    n = 8
    extra = {  # (weights, grads) bytes on top of the per-parameter ones: gathered units
        'fsdp2_full_shard': (2 * 2 * blk + 4 * root, (2 + 4) * blk + 4 * root),
        'fsdp2_shard_grad_op': (2 * 48 * blk + 4 * root, (2 + 4) * blk + 4 * root),
        'fsdp1_full_shard': (2 * 4 * blk + 2 * blk + (4 + 2) * root, (4 + 4) * blk + 4 * root),
        'deepspeed_zero3': (2 * 2 * blk, 0)}
    assert set(BYTES_PER_PARAM) == set(GB_6B_ON_8) == set(mp.STRATEGIES)
    for strategy in mp.STRATEGIES:
        p = mp.plan(facts_6b, strategy, n, overhead_gib=0)
        ew, eg = extra.get(strategy, (0, 0))
        (wr, ws), (gr, gs), (orep, osh) = BYTES_PER_PARAM[strategy]
        assert p.weights == pytest.approx(wr * params + ws * params / n + ew), strategy
        assert p.grads == pytest.approx(gr * params + gs * params / n + eg), strategy
        assert p.optim == pytest.approx(orep * params + osh * params / n), strategy
        state = p.weights + p.grads + p.optim
        assert state / 1e9 == pytest.approx(GB_6B_ON_8[strategy], abs=0.05), strategy


def test_6b_min_gpus(facts_6b):
    assert mp.min_gpus(facts_6b, 'ddp', 80) is None  # 16+ bytes per parameter on every GPU
    # fully sharded: 16 bytes per parameter spread over N GPUs plus the gathered blocks
    n = mp.min_gpus(facts_6b, 'fsdp', 80)
    assert n == 2
    assert mp.min_gpus(facts_6b, 'fsdp1_full_shard', 80) == 2
    assert mp.min_gpus(facts_6b, 'zero3', 40) <= mp.min_gpus(facts_6b, 'zero1', 40)


def test_strategies_are_the_pieces_train_takes():
    """One row per piece of configs/_base_/strategies, named as tools/train.py --strategy names
    them; the short names are aliases of pieces."""
    from tools.train import STRATEGIES as TRAIN_STRATEGIES
    pieces = sorted(osp.splitext(f)[0] for f in os.listdir(mp.STRATEGY_DIR) if f.endswith('.py'))
    assert sorted(mp.STRATEGIES) == pieces == sorted(TRAIN_STRATEGIES)
    assert set(mp.STRATEGY_NAMES) == set(mp.PRECISION) == set(mp.STRATEGIES)
    assert set(mp.ALIASES.values()) <= set(mp.STRATEGIES)
    assert not set(mp.ALIASES) & set(mp.STRATEGIES)
    for name in mp.STRATEGIES:
        assert mp.resolve_strategy(name) == name
    assert mp.resolve_strategy('fsdp_sgo') == 'fsdp2_shard_grad_op'
    assert mp.resolve_strategy('zero1') == 'deepspeed_zero1'
    with pytest.raises(ValueError, match='fsdp1_full_shard'):
        mp.resolve_strategy('fsdp1_shard_grad_op')
    facts = tiny_facts()
    for alias, piece in mp.ALIASES.items():
        assert mp.plan(facts, alias, 2) == mp.plan(facts, piece, 2)


def test_config_strategy(repo_root):
    """The piece a config trains with, from its runner_type/strategy: the 6B full-tuning configs
    default to fsdp2_full_shard; DDP otherwise; what tools/train.py --strategy sets."""
    from mmengine.config import Config

    from tools.train import apply_strategy
    cfg = Config.fromfile(osp.join(
        repo_root, 'configs', 'segmentation', 'intern_vit_6b', 'full_tuning',
        'upernet_intern-vit-6b_8xb2-80k_ade20k-504x504.py'))
    assert mp.config_strategy(cfg) == ('fsdp2_full_shard', True)
    for piece in mp.STRATEGIES:
        apply_strategy(cfg, piece)
        assert mp.config_strategy(cfg) == (piece, True), piece
    apply_strategy(cfg, 'fsdp2_full_shard')
    cfg.strategy.reshard_after_forward = False
    cfg.strategy.wrap_modules = ['Block', 'UPerHead']
    assert mp.config_strategy(cfg) == ('fsdp2_shard_grad_op', False)
    apply_strategy(cfg, 'deepspeed_zero3')
    cfg.strategy.zero_optimization.overlap_comm = False
    assert mp.config_strategy(cfg) == ('deepspeed_zero3', False)
    assert mp.config_strategy(Config(dict(runner_type='FlexibleRunner',
                                          strategy=dict(type='ColossalAIStrategy')))) \
        == (None, False)
    assert mp.config_strategy(Config(dict(model=dict()))) == ('ddp', True)


def test_table_has_a_row_per_strategy():
    text = mp.format_table(tiny_facts(), mp.STRATEGIES, 2, 4.0)
    lines = text.splitlines()
    assert len(lines) == 2 + len(mp.STRATEGIES)
    assert lines[2].startswith('| DDP (bf16 autocast) |')
    assert all(line.endswith(' 1 |') for line in lines[2:])  # tiny: one GPU is enough
    pieces = [line.split(' | ')[1] for line in lines[2:]]
    assert pieces == list(mp.STRATEGIES)
    text = mp.format_table(tiny_facts(), ['fsdp', 'fsdp1'], 2, 4.0,
                           config_piece='fsdp2_full_shard')
    assert [line.split(' | ')[:2] for line in text.splitlines()[2:]] == [
        ['| FSDP2 full shard', 'fsdp2_full_shard (config)'],
        ['| FSDP1 full shard (bf16 autocast)', 'fsdp1_full_shard']]


def test_cli_arch(capsys):
    text = mp.main(['--arch', '300m', '--crop', '56', '--batch', '1', '--gpus', '2',
                    '--strategy', 'zero3'])
    assert 'DeepSpeed ZeRO-3' in text and 'FSDP2' not in text
    assert 'parameters: 0.303 B' in text  # pos_embed at the 56 px crop grid (4 x 4)
    assert capsys.readouterr().out.strip() == text
    # the names tools/train.py --strategy takes; an alias and its piece make one row
    text = mp.main(['--arch', '300m', '--crop', '56', '--batch', '1', '--gpus', '2',
                    '--strategy', 'fsdp1_full_shard', '--strategy', 'deepspeed_zero3',
                    '--strategy', 'zero3'])
    rows = text.splitlines()[-2:]
    assert rows[0].startswith('| FSDP1 full shard (bf16 autocast) | fsdp1_full_shard |')
    assert rows[1].startswith('| DeepSpeed ZeRO-3 | deepspeed_zero3 |')
    assert 'strategy of the config' not in text  # no config
    capsys.readouterr()
    with pytest.raises(SystemExit):
        mp.main(['--arch', '300m', '--strategy', 'fsdp3'])
    assert "got 'fsdp3'" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec('mmseg') is None, reason='needs mmseg')
def test_cli_on_demo_config(repo_root, capsys):
    cfg = osp.join(repo_root, 'configs', 'demo',
                   'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')
    text = mp.main([cfg, '--gpus', '2', '--gpu-mem', '16', '--strategy', 'fsdp',
                    '--strategy', 'zero2'])
    assert 'FSDP2 full shard' in text and 'DeepSpeed ZeRO-2' in text and 'DDP' not in text
    assert 'neck/heads not counted' not in text  # the UperNet head was measured
    assert 'batch 4, crop 112x112' in text
    assert 'strategy of the config: ddp\n' in text  # the demo config runs plain DDP
    assert '(config)' not in text  # no DDP row


# --------------------------------------------------------------------------- measured peak
DEMO = ('configs', 'demo', 'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')


def _demo_batch(batch, crop, num_classes):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    g = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(batch):
        inputs.append(torch.randint(0, 256, (3, *crop), dtype=torch.uint8, generator=g))
        sample = SegDataSample(metainfo=dict(img_shape=crop, ori_shape=crop, pad_shape=crop))
        sample.gt_sem_seg = PixelData(
            data=torch.randint(0, num_classes, (1, *crop), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def measure_ddp_step_peak(cfg, batch, crop, store):
    """Peak bytes torch holds on the CPU during one training step of ``cfg``'s model as the DDP
    recipe runs it: float32 weights wrapped in ``DistributedDataParallel`` (one gloo rank,
    MMEngine's ``broadcast_buffers=False``), the data preprocessor, the forward under bf16
    autocast (what ``AmpOptimWrapper`` does on a GPU; it refuses to run on the CPU), backward
    outside autocast, ``AdamW.step`` and ``zero_grad`` (set to None).

    How: ``torch.profiler`` with ``profile_memory=True`` records every allocation and free of
    c10's CPU allocator made on the profiled thread, with its size: each tensor storage
    (weights, gradients, DDP buckets, AdamW states, the tensors autograd saves, autocast's
    weight copies, kernel workspaces and temporaries), however it is held (Python or C++).
    Frees of memory allocated before the profiler started, or made on another thread, are not
    reported, so profiling starts before the model is built and the step stays on this thread
    (no gloo collectives, which run on gloo's worker thread; see below): the
    running sum of the events is then the bytes torch holds for this model and step, and its
    maximum inside the measured step is the peak (on a GPU, ``torch.cuda.max_memory_allocated``
    minus the caching allocator's rounding). A first step creates the AdamW states (present in
    every later step); the second one is measured.

    Returns ``(peak, held_before_step)`` in bytes."""
    import torch.distributed as dist
    from mmengine.registry import MODELS, init_default_scope
    from torch.distributed.algorithms.ddp_comm_hooks.debugging_hooks import noop_hook
    from torch.nn.parallel import DistributedDataParallel
    from torch.profiler import ProfilerActivity, profile, record_function

    init_default_scope('mmseg')
    owns_group = not dist.is_initialized()
    if owns_group:
        dist.init_process_group('gloo', init_method=f'file://{store}', rank=0, world_size=1)
    try:
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            model = MODELS.build(cfg.model)
            model.init_weights()
            model.train()
            # One rank: the initial broadcast and the allreduce are the identity. Skipping
            # them keeps gloo's worker thread out: the profiler does not see its frees of the
            # main thread's tensors (the coalesced broadcast buffer, 4 B/param, would seem to
            # stay alive).
            ddp = DistributedDataParallel(model, broadcast_buffers=False, init_sync=False)
            ddp.register_comm_hook(None, noop_hook)
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
            for step in ('warmup', 'measured'):
                with record_function(step):
                    data = model.data_preprocessor(
                        _demo_batch(batch, crop, cfg.model.decode_head.num_classes),
                        training=True)
                    with torch.autocast('cpu', dtype=torch.bfloat16):
                        losses = ddp(**data, mode='loss')
                    loss, _ = model.parse_losses(losses)
                    loss.backward()
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    del data, losses, loss
    finally:
        if owns_group:
            dist.destroy_process_group()
    events = prof.profiler.kineto_results.events()
    start, end = next((e.start_ns(), e.end_ns()) for e in events if e.name() == 'measured')
    held = before = peak = 0
    for t, nbytes in sorted((e.start_ns(), e.nbytes()) for e in events
                            if e.name() == '[memory]'):
        if t < start:
            before = held + nbytes
        elif t <= end:
            peak = max(peak, held + nbytes)
        held += nbytes
    return peak, before


@pytest.mark.skipif(importlib.util.find_spec('mmseg') is None, reason='needs mmseg')
@pytest.mark.parametrize('with_cp', [False, True])
@pytest.mark.filterwarnings('ignore:Grad strides do not match bucket view strides')
def test_ddp_estimate_matches_measured_peak(repo_root, tmp_path, with_cp):
    """The planner's DDP total for the tiny demo config (UperNet + auxiliary head on a 4-block
    InternViT, 0.78 M parameters, 4 crops of 112x112) against the measured peak of a step.

    The planner sums float32 weights, autocast's bf16 copies, float32 gradients and DDP's
    buckets, the AdamW states and the saved activations (float32 weights under bf16 autocast).
    It leaves out the input batch (uint8 images, float32 inputs, int64 labels: over 1 MiB
    here), allocator rounding and fragmentation, kernel workspaces and the optimizer's
    temporaries, and (``overhead_gib=0`` here) the CUDA context; it over-counts in that the
    gradients and the forward's activations do not all live at once."""
    from mmengine.config import Config
    cfg = Config.fromfile(osp.join(repo_root, *DEMO))
    cfg.model.backbone.with_cp = with_cp
    cfg.optim_wrapper.type = 'AmpOptimWrapper'  # the step measured below runs under autocast
    facts, crop, batch = mp.facts_from_config(cfg)
    assert (crop, batch) == ((112, 112), 4)
    plan = mp.plan(facts, 'ddp', 1, overhead_gib=0)
    estimate = plan.total_cp if with_cp else plan.total_nocp
    peak, before = measure_ddp_step_peak(cfg, batch, crop, tmp_path / 'pg_store')
    # Between steps torch holds float32 weights, DDP's buckets and the AdamW states (and a few
    # KiB of BatchNorm statistics and AdamW step counters); also a check that the profiler saw
    # every free of the warm-up step.
    assert before == pytest.approx((4 + 4 + 8) * facts.total, rel=1e-3)
    mib = 2 ** 20
    msg = (f'with_cp={with_cp}: planner {estimate / mib:.2f} MiB, measured peak '
           f'{peak / mib:.2f} MiB ({estimate / peak - 1:+.1%})')
    print(msg)
    # the issue asks for 25%; measured here: +0.1% and +4.5%, so hold it to 10%
    assert abs(estimate - peak) <= 0.10 * peak, msg
