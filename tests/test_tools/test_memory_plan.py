"""Memory planner: a tiny arch against the analytic count, 6B parameter bytes, the CLI."""
import importlib.util
import os.path as osp

import pytest

from backbones import count_parameters
from tools.analysis import memory_plan as mp

TINY = dict(embed_dims=64, num_layers=2, num_heads=4, mlp_ratio=4.0, norm_type='rms_norm',
            qk_norm=True, qkv_bias=False, layer_scale_init=0.1)
C, M, H, L = 64, 256, 4, 2
N = 4 * 4 + 1  # 56 px crop, patch 14, cls token
B = 2


def analytic_block_bytes(tokens):
    """Bytes one bf16 InternViT block (RMSNorm, QK-norm, LayerScale, sdpa) saves for backward,
    per token: 4 RMSNorms (norm1, q_norm, k_norm, norm2) keep a float32 copy of their input
    (4 B x C), the bf16 normalised values (2 B x C) and a float32 rsqrt (4 B); the whole qkv
    output (6 B x C: v is a view of it); q, k, the attention output (= proj input), the qkv
    input, proj output (ls1 input), fc1 input and fc2 output (ls2 input), 2 B x C each; GELU
    input and fc2 input (2 B x M each); the attention's float32 log-sum-exp (4 B per head)."""
    per_token = (4 * (4 + 2) + 6 + 7 * 2) * C + 2 * 2 * M + 4 * 4 + 4 * H
    return tokens * per_token


def tiny_facts():
    return mp.facts_from_arch(TINY, 56, B, out_indices=[1])


def test_tiny_block_activations_match_analytic():
    facts = tiny_facts()
    assert facts.block_act == pytest.approx(B * analytic_block_bytes(N))
    assert facts.block_input == B * N * C * 2
    assert facts.other_act == B * C * 4 * 4 * 4  # one float32 output map
    assert facts.activations(False) == pytest.approx(L * B * analytic_block_bytes(N)
                                                     + facts.other_act)
    assert facts.activations(True) == pytest.approx(
        L * B * N * C * 2 + B * analytic_block_bytes(N) + facts.other_act)


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
        'ddp': (6 * t, 4 * t, 8 * t),
        'fsdp': (4 * t / n + 4 * blk + 4 * root, 4 * t / n + 6 * blk + 4 * root, 8 * t / n),
        'fsdp_sgo': (4 * t / n + 2 * L * blk + 4 * root, 4 * t / n + 6 * blk + 4 * root,
                     8 * t / n),
        'zero1': (2 * t, 2 * t, 12 * t / n),
        'zero2': (2 * t, 2 * t / n, 12 * t / n),
        'zero3': (2 * t / n + 4 * blk, 2 * t / n, 12 * t / n),
    }[strategy]
    p = mp.plan(facts, strategy, n, overhead_gib=0)
    assert (p.weights, p.grads, p.optim) == pytest.approx(expected)
    assert p.total_cp == pytest.approx(sum(expected) + facts.activations(True))


@pytest.fixture
def facts_6b(monkeypatch):
    # parameter bytes only: skip measuring a 3200-wide block
    monkeypatch.setattr(mp, 'block_activation_fit', lambda *a, **k: (0.0, 0.0))
    return mp.facts_from_arch('6b', 504, 2)


def test_6b_parameter_bytes(facts_6b):
    params = count_parameters('6b')
    assert abs(params - 5.9e9) / 5.9e9 < 0.001
    assert facts_6b.trainable == params and facts_6b.num_blocks == 48
    zero1 = mp.plan(facts_6b, 'zero1', 8, overhead_gib=0)
    assert zero1.weights == 2 * params  # bf16 weights, replicated: 11.8 GB
    assert zero1.optim == 12 * params / 8  # fp32 master + 2 AdamW states, sharded
    ddp = mp.plan(facts_6b, 'ddp', 8, overhead_gib=0)
    assert ddp.optim == 8 * params and ddp.grads == 4 * params
    fsdp = mp.plan(facts_6b, 'fsdp', 8, overhead_gib=0)
    assert fsdp.optim == 8 * params / 8


def test_6b_min_gpus(facts_6b):
    assert mp.min_gpus(facts_6b, 'ddp', 80) is None  # 16+ bytes per parameter on every GPU
    # fully sharded: 16 bytes per parameter spread over N GPUs plus the gathered blocks
    n = mp.min_gpus(facts_6b, 'fsdp', 80)
    assert n == 2
    assert mp.min_gpus(facts_6b, 'zero3', 40) <= mp.min_gpus(facts_6b, 'zero1', 40)


def test_table_has_a_row_per_strategy():
    text = mp.format_table(tiny_facts(), mp.STRATEGIES, 2, 4.0)
    lines = text.splitlines()
    assert len(lines) == 2 + len(mp.STRATEGIES)
    assert lines[2].startswith('| DDP (bf16 autocast) |')
    assert all(line.endswith(' 1 |') for line in lines[2:])  # tiny: one GPU is enough


def test_cli_arch(capsys):
    text = mp.main(['--arch', '300m', '--crop', '56', '--batch', '1', '--gpus', '2',
                    '--strategy', 'zero3'])
    assert 'DeepSpeed ZeRO-3' in text and 'FSDP2' not in text
    assert 'parameters: 0.304 B' in text
    assert capsys.readouterr().out.strip() == text


@pytest.mark.skipif(importlib.util.find_spec('mmseg') is None, reason='needs mmseg')
def test_cli_on_demo_config(repo_root, capsys):
    cfg = osp.join(repo_root, 'configs', 'demo',
                   'upernet_intern-vit-tiny_1xb4-600_synthetic-112x112.py')
    text = mp.main([cfg, '--gpus', '2', '--gpu-mem', '16', '--strategy', 'fsdp',
                    '--strategy', 'zero2'])
    assert 'FSDP2 full shard' in text and 'DeepSpeed ZeRO-2' in text and 'DDP' not in text
    assert 'neck/heads not counted' not in text  # the UperNet head was measured
    assert 'batch 4, crop 112x112' in text
