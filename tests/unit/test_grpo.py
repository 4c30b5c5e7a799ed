"""Dr. GRPO (rlpt_plugin/rl/grpo.py, pool.rollout_advantages, the grpo term of mixed_loss)
against a hand-computed example and a per-sequence, per-token python loop (float64).

Shape legend: B rows, S positions, V vocab, G GRPO items.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlpt_plugin.rl.grpo import MAX_LOG_RATIO, clipped_surrogate_sum
from rlpt_plugin.rl.losses import Denominators, LossConfig, LossWeights, Segments, count_local, mixed_loss
from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind, SelectionStats, rollout_advantages, select

B, S, V = 8, 10, 7
GRPO_ROWS = [1, 2, 3, 5, 6, 7]
ADVANTAGES = [0.5, -0.25, -0.25, 1.0 / 3, 0.0, -1.0 / 3]  # two groups of 3 rollouts
EPS = 0.2


def make_batch(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    logits_BSV = torch.randn(B, S, V, generator=gen, dtype=torch.float64, requires_grad=True)
    labels_BS = torch.randint(0, V, (B, S), generator=gen)
    lm_BS = torch.zeros(B, S, dtype=torch.float64)
    rl_BS = torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):
        start, n = 2 + b % 3, 1 + (b * 5) % 4
        lm_BS[b, :start] = 1
        rl_BS[b, start:start + n] = 1
    logps_BS = torch.log_softmax(logits_BSV, -1).gather(-1, labels_BS[..., None])[..., 0]
    # old log-probs near the policy's, some far enough for the clip to bite on both sides
    old_BS = (logps_BS.detach() + 0.4 * torch.randn(B, S, generator=gen, dtype=torch.float64))
    return dict(logits=logits_BSV, logps=logps_BS, old=old_BS, lm=lm_BS, rl=rl_BS)


def naive_grpo_sum(batch: dict, rows: list[int], advs: list[float], eps: float = EPS) -> torch.Tensor:
    """- sum over items, then tokens, of min(r A, clip(r) A): one sequence at a time."""
    total = torch.zeros((), dtype=torch.float64)
    for b, a in zip(rows, advs):
        for s in range(S):
            if batch["rl"][b, s] == 1:
                r = torch.exp(batch["logps"][b, s] - batch["old"][b, s])
                total = total - torch.minimum(r * a, torch.clamp(r, 1 - eps, 1 + eps) * a)
    return total


def run(batch: dict, rows: list[int], advs: list[float], denominators: Denominators, mb_rows=None,
        weights=LossWeights(lm=0.0, dpo=0.0, grpo=1.0), eps: float = EPS):
    """mixed_loss on rows ``mb_rows`` of the batch (default: all) with the given GRPO items."""
    keep = list(range(B)) if mb_rows is None else mb_rows
    remap = {b: i for i, b in enumerate(keep)}
    items = [(remap[b], a) for b, a in zip(rows, advs) if b in remap]
    empty = torch.zeros(0, dtype=torch.int64)
    return mixed_loss(batch["logps"][keep], batch["old"][keep], batch["lm"][keep], batch["rl"][keep],
                      empty, empty, empty, weights=weights, denominators=denominators,
                      config=LossConfig(grpo_clip=eps),
                      grpo_rows_G=torch.tensor([i for i, _ in items], dtype=torch.int64),
                      grpo_advantages_G=torch.tensor([a for _, a in items], dtype=torch.float64))


def group(scores, kinds) -> CandidateGroup:
    return CandidateGroup(prefix=(1, 2), candidates=tuple((3 + i,) for i in range(len(kinds))),
                          kinds=tuple(kinds), scores=scores, ref_logps=None, group_id=0)


O, W, R = CandidateKind.ORIGINAL, CandidateKind.REWRITE, CandidateKind.ROLLOUT


def test_advantages_by_hand():
    # original and rewrite are judged with the rollouts but stay out of the group and the mean
    g = group((0.9, 0.1, 1.0, 0.0, 0.5), (O, W, R, R, R))
    assert rollout_advantages(g) == ((2, 0.5), (3, -0.5), (4, 0.0))  # mean 0.5, no std division
    g = group((1.0, 0.2, 0.8), (R, R, R))  # mean 2/3; the std (0.34) would scale these by ~2.9
    got = rollout_advantages(g)
    assert [i for i, _ in got] == [0, 1, 2]
    assert [a for _, a in got] == pytest.approx([1 / 3, 0.2 - 2 / 3, 0.8 - 2 / 3], abs=1e-15)
    assert select(g, rule="grpo").advantages == got
    assert select(g, rule="grpo").chosen is None and select(g, rule="grpo").best is None


def test_tied_few_and_unjudged_pools_are_skipped_and_counted():
    tied = group((1.0, 0.5, 0.5), (O, R, R))  # the original differs, the rollouts tie
    few = group((1.0, 0.0), (O, R))
    unjudged = group(None, (R, R))
    assert rollout_advantages(tied) == "all_tied" and select(tied, rule="grpo").skip_reason == "all_tied"
    assert select(few, rule="grpo").skip_reason == "few_rollouts"
    assert select(unjudged, rule="grpo").skip_reason == "unjudged"
    ok = group((0.0, 1.0), (R, R))
    stats = SelectionStats.from_selections([(g, select(g, rule="grpo")) for g in (tied, few, unjudged, ok)])
    assert stats.num_grpo_groups == 1 and stats.num_pairs == 0 and stats.num_best == 0
    assert stats.skipped == {"all_tied": 1, "few_rollouts": 1, "unjudged": 1}


def test_surrogate_by_hand():
    # ratios e^0 = 1, e^0.5 = 1.65 (clipped at 1.2 for A > 0), e^-0.5 = 0.61 (clipped at 0.8 for A < 0)
    logps = torch.tensor([[0.0, 0.5, -0.5]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros(1, 3, dtype=torch.float64)
    mask = torch.ones(1, 3)
    loss, clipped = clipped_surrogate_sum(logps, old, mask, torch.tensor([2.0], dtype=torch.float64), 0.2)
    assert loss.item() == pytest.approx(-(1.0 * 2 + 1.2 * 2 + math.exp(-0.5) * 2))
    assert int(clipped) == 1
    loss.backward()  # d/dlogp of -r A where unclipped (r = e^logp), 0 where clipped
    assert logps.grad.tolist()[0] == pytest.approx([-2.0, 0.0, -2 * math.exp(-0.5)])
    loss, clipped = clipped_surrogate_sum(logps.detach(), old, mask, torch.tensor([-1.0], dtype=torch.float64), 0.2)
    assert loss.item() == pytest.approx(1.0 + math.exp(0.5) + 0.8) and int(clipped) == 1


def test_a_huge_log_ratio_stays_finite_in_fp32():
    # a token sampled at log-prob -100 that the policy now gives -1: e^99 overflows fp32
    logps = torch.tensor([[-1.0, 0.0]], dtype=torch.float32, requires_grad=True)
    old = torch.tensor([[-100.0, 0.0]], dtype=torch.float32)
    loss, _ = clipped_surrogate_sum(logps, old, torch.ones(1, 2), torch.tensor([-1.0]), 0.2)
    assert math.isfinite(loss.item()) and loss.item() == pytest.approx(math.exp(MAX_LOG_RATIO) + 1.0, rel=1e-5)
    loss.backward()
    assert logps.grad.tolist()[0] == pytest.approx([0.0, 1.0])  # beyond the bound: no gradient
    assert torch.isfinite(logps.grad).all()


def test_loss_and_gradients_match_the_per_sequence_loop():
    batch = make_batch()
    n_tokens = float(sum(batch["rl"][b].sum() for b in GRPO_ROWS))
    out = run(batch, GRPO_ROWS, ADVANTAGES, Denominators(1.0, 0.0, 0.0, n_tokens))
    want = naive_grpo_sum(batch, GRPO_ROWS, ADVANTAGES) / n_tokens  # ONE global token count
    assert abs(out.loss.item() - want.item()) < 1e-12
    (grad,) = torch.autograd.grad(out.loss, batch["logits"], retain_graph=True)
    (want_grad,) = torch.autograd.grad(want, batch["logits"])
    assert torch.allclose(grad, want_grad, rtol=0, atol=1e-12)
    assert out.counts["num_grpo_tokens"] == n_tokens
    assert 0 < out.metrics["grpo_clip_fraction"][0].item() < n_tokens  # the clip bites, not everywhere
    assert out.metrics["grpo_abs_advantage"][0].item() == pytest.approx(sum(abs(a) for a in ADVANTAGES))


def test_per_sequence_length_normalisation_is_not_used():
    """Dr. GRPO: 1/C over all tokens, not mean over each sequence's tokens (which differs here)."""
    batch = make_batch()
    n_tokens = float(sum(batch["rl"][b].sum() for b in GRPO_ROWS))
    out = run(batch, GRPO_ROWS, ADVANTAGES, Denominators(1.0, 0.0, 0.0, n_tokens))
    per_seq = sum(naive_grpo_sum(batch, [b], [a]) / batch["rl"][b].sum() for b, a in zip(GRPO_ROWS, ADVANTAGES))
    assert abs(out.loss.item() - per_seq.item() / len(GRPO_ROWS)) > 1e-3


@pytest.mark.parametrize("splits", [[[0, 1, 2, 3], [4, 5, 6, 7]], [[0, 1], [2, 3, 4], [5], [6, 7]]])
def test_micro_batch_split_gives_the_same_loss_and_gradients(splits):
    batch = make_batch(seed=3)
    items = torch.tensor(GRPO_ROWS)
    local = [count_local(batch["lm"][rows], batch["rl"][rows], torch.zeros(0, dtype=torch.int64),
                         torch.zeros(0, dtype=torch.int64),
                         grpo_rows_G=torch.tensor([i for i, b in enumerate(rows) if b in GRPO_ROWS]))
             for rows in splits]
    global_counts = sum(local, Denominators(0.0, 0.0, 0.0))
    assert global_counts.num_grpo_tokens == float(batch["rl"][items].sum())
    weights = LossWeights(lm=1.0, dpo=0.0, grpo=0.7)
    whole = run(batch, GRPO_ROWS, ADVANTAGES, global_counts, weights=weights)
    parts = [run(batch, GRPO_ROWS, ADVANTAGES, global_counts, mb_rows=rows, weights=weights) for rows in splits]
    total = sum(p.loss for p in parts)
    assert abs(total.item() - whole.loss.item()) < 1e-12
    (g_whole,) = torch.autograd.grad(whole.loss, batch["logits"], retain_graph=True)
    (g_parts,) = torch.autograd.grad(total, batch["logits"], retain_graph=True)
    assert torch.allclose(g_whole, g_parts, rtol=0, atol=1e-12)


def test_prefix_shared_items_equal_unpacked_rows():
    """Two GRPO items in segments 1 and 2 of ONE row give the loss of the same tokens in two rows."""
    batch = make_batch(seed=5)
    logps, old = batch["logps"], batch["old"]
    # unpacked: rows 1 and 2; shared: row 0 holds row 1's item as segment 1, row 2's as segment 2
    m1, m2 = batch["rl"][1] != 0, batch["rl"][2] != 0
    n1, n2 = int(m1.sum()), int(m2.sum())
    width = n1 + n2 + 1
    lp = torch.cat([logps[1, m1], logps[2, m2], logps[0, :1]])[None]
    od = torch.cat([old[1, m1], old[2, m2], old[0, :1]])[None]
    rl = torch.tensor([[1.0] * (n1 + n2) + [0.0]])
    seg = torch.tensor([[1] * n1 + [2] * n2 + [0]])
    empty = torch.zeros(0, dtype=torch.int64)
    kw = dict(weights=LossWeights(lm=0.0, dpo=0.0, grpo=1.0), denominators=Denominators(0.0, 0.0, 0.0, 9.0),
              config=LossConfig())
    shared = mixed_loss(lp, od, torch.zeros(1, width), rl, empty, empty, empty, **kw,
                        segments=Segments(seg, empty, empty, empty, grpo_G=torch.tensor([1, 2])),
                        grpo_rows_G=torch.tensor([0, 0]), grpo_advantages_G=torch.tensor([0.5, -0.5]))
    plain = mixed_loss(logps, old, torch.zeros(B, S), batch["rl"], empty, empty, empty, **kw,
                       grpo_rows_G=torch.tensor([1, 2]), grpo_advantages_G=torch.tensor([0.5, -0.5]))
    assert abs(shared.loss.item() - plain.loss.item()) < 1e-12 and shared.loss.item() != 0
    assert shared.counts["num_grpo_tokens"] == plain.counts["num_grpo_tokens"] == n1 + n2
    (g_shared,) = torch.autograd.grad(shared.loss, batch["logits"], retain_graph=True)
    (g_plain,) = torch.autograd.grad(plain.loss, batch["logits"], retain_graph=True)
    assert torch.allclose(g_shared, g_plain, rtol=0, atol=1e-12)


def test_weight_zero_and_bad_inputs():
    batch = make_batch()
    n_tokens = float(sum(batch["rl"][b].sum() for b in GRPO_ROWS))
    off = run(batch, GRPO_ROWS, ADVANTAGES, Denominators(1.0, 0.0, 0.0, n_tokens),
              weights=LossWeights(lm=0.0, dpo=0.0, grpo=0.0))
    assert off.loss.item() == 0.0 and off.terms["grpo"].item() != 0.0  # reported, not trained
    with pytest.raises(ValueError, match="num_grpo_tokens must be > 0"):
        run(batch, GRPO_ROWS, ADVANTAGES, Denominators(1.0, 0.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="grpo_clip must be a number in"):
        LossConfig(grpo_clip=1.0)
    empty = torch.zeros(0, dtype=torch.int64)
    with pytest.raises(ValueError, match="grpo_rows_G must hold row indices"):
        mixed_loss(batch["logps"], batch["old"], batch["lm"], batch["rl"], empty, empty, empty,
                   weights=LossWeights(), denominators=Denominators(1.0, 0.0, 0.0, 1.0), config=LossConfig(),
                   grpo_rows_G=torch.tensor([B + 1]), grpo_advantages_G=torch.tensor([1.0]))
