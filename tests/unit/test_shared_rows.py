"""Prefix-shared rows (rlpt_plugin/rl/shared_rows.py) against the unpacked rows they replace.

The model-free exactness property: every trained position of a shared row sees exactly the
(token, position) pairs its unpacked row shows it, and has the same label. Any model whose
output at a position is a function of what it attends to (a causal transformer with RoPE from
the position ids) then gives the same log-prob there; the distributed invariance tests check the
real GPTModel on top of this.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import torch

from rlpt_plugin.rl.losses import Denominators, LossConfig, LossWeights, mixed_loss
from rlpt_plugin.rl.packing import MicroBatch, PackSpec, pack_step
from rlpt_plugin.rl.pool import CandidateGroup, select
from rlpt_plugin.rl.shared_rows import prefix_shared_mask
from rlpt_plugin.rl.step import batch_segments, local_denominators
from tests.unit.test_packing import _random_group, hand_group

I64 = torch.int64


def test_hand_built_shared_row_exact_tensors() -> None:
    spec = PackSpec(seq_length=6, micro_batch_size=4, num_microbatches=1, use_rf_nll=True,
                    ref_from_rollout=True, shared_rows=True)
    g = hand_group(ref=True)  # original (LM) [21 22], rollout (rejected) [31 32 33], rewrite (chosen) [41]
    (mb,) = pack_step([g], [select(g)], spec)
    mb.validate()
    assert mb.tokens_BS.tolist() == [[11, 12, 13, 21, 13, 31, 32, 13]]  # width 8 > seq_length 6
    assert mb.labels_BS.tolist() == [[12, 13, 21, 22, 31, 32, 33, 41]]
    assert mb.position_ids_BS.tolist() == [[0, 1, 2, 3, 2, 3, 4, 2]]  # each suffix at its own-row positions
    assert mb.segment_ids_BS.tolist() == [[0, 0, 1, 1, 2, 2, 2, 3]]
    assert mb.lm_mask_BS.tolist() == [[1, 1, 1, 1, 0, 0, 0, 0]]  # the LM row's labels: prefix + original
    assert mb.rl_mask_BS.tolist() == [[0, 0, 1, 1, 1, 1, 1, 1]]
    assert torch.allclose(mb.ref_logps_BS[0, 2:], torch.tensor([-1.0, -2.0, -0.1, -0.2, -0.3, -0.4]))
    assert (mb.chosen_rows_P.tolist(), mb.chosen_segs_P.tolist()) == ([0], [3])
    assert (mb.rejected_rows_P.tolist(), mb.rejected_segs_P.tolist()) == ([0], [2])
    assert (mb.rf_rows_R.tolist(), mb.rf_segs_R.tolist()) == ([0], [3])
    allowed = (~prefix_shared_mask(mb.segment_ids_BS))[0, 0].int().tolist()
    assert allowed[5] == [1, 1, 0, 0, 1, 1, 0, 0]  # rejected's 2nd token: the prefix and itself
    assert allowed[7] == [1, 1, 0, 0, 0, 0, 0, 1]  # chosen's first token: prefix + its own copy of 13


def _views(mb: MicroBatch) -> Counter:
    """(group, kind, label, what the position attends to as (token, position) pairs) per trained
    position; kind: 'lm' for an LM position, or the item's candidate tokens for an RL position."""
    b_count, s = mb.tokens_BS.shape
    if mb.shared:
        allowed_BSS = ~prefix_shared_mask(mb.segment_ids_BS)[:, 0]
        segs_BS = mb.segment_ids_BS
    else:
        allowed_BSS = ~torch.triu(torch.ones(s, s, dtype=torch.bool), 1).expand(b_count, s, s)
        segs_BS = torch.zeros_like(mb.tokens_BS)
    out: Counter = Counter()
    for b in range(mb.num_real_rows):
        gid = int(mb.group_ids_B[b])
        for t in range(s):
            seen = tuple((int(mb.tokens_BS[b, k]), int(mb.position_ids_BS[b, k]))
                         for k in range(s) if allowed_BSS[b, t, k])
            label = int(mb.labels_BS[b, t])
            if mb.lm_mask_BS[b, t]:
                out[(gid, "lm", label, seen)] += 1
            if mb.rl_mask_BS[b, t]:
                where = (mb.rl_mask_BS[b] != 0) & (segs_BS[b] == segs_BS[b, t])
                out[(gid, tuple(mb.labels_BS[b][where].tolist()), label, seen)] += 1
    return out


def _fake_logps(mb: MicroBatch) -> torch.Tensor:
    """A 'model': log-prob a deterministic function of the label and what the position sees."""
    b_count, s = mb.tokens_BS.shape
    views = {}
    allowed = ~prefix_shared_mask(mb.segment_ids_BS)[:, 0] if mb.shared else \
        ~torch.triu(torch.ones(s, s, dtype=torch.bool), 1).expand(b_count, s, s)
    out = torch.zeros(b_count, s, dtype=torch.float64)
    for b in range(b_count):
        for t in range(s):
            key = (int(mb.labels_BS[b, t]), tuple((int(mb.tokens_BS[b, k]), int(mb.position_ids_BS[b, k]))
                                                  for k in range(s) if allowed[b, t, k]))
            views.setdefault(key, -(random.Random(hash(key)).random() * 4 + 0.01))
            out[b, t] = views[key]
    return out


def _loss(mb: MicroBatch, denominators: Denominators) -> dict[str, float]:
    logps = _fake_logps(mb)
    ref = mb.ref_logps_BS.double()
    out = mixed_loss(logps, ref, mb.lm_mask_BS.double(), mb.rl_mask_BS.double(), mb.chosen_rows_P,
                     mb.rejected_rows_P, mb.rf_rows_R, weights=LossWeights(lm=1.0, dpo=1.0, rf_nll=0.5),
                     denominators=denominators, config=LossConfig(beta=0.5), segments=batch_segments(mb))
    return {"loss": float(out.loss), **{k: float(v) for k, v in out.terms.items()}}


def test_random_pools_shared_positions_see_what_unpacked_rows_see() -> None:
    rng = random.Random(7)
    fell_back = shared_total = 0
    for trial in range(40):
        flags = [rng.random() < 0.5 for _ in range(3)]
        flags[1] = flags[1] or not any(flags)
        num_groups, m = rng.randint(1, 6), rng.randint(1, 3)
        groups = [_random_group(rng, 100 * trial + i) for i in range(num_groups)]
        spec = PackSpec(seq_length=rng.randint(6, 14), micro_batch_size=3 * num_groups, num_microbatches=m,
                        lm_on_window=flags[0], use_dpo=flags[1], use_rf_nll=flags[2],
                        ref_from_rollout=rng.random() < 0.5)
        sels = [select(g, rule="dpo" if spec.use_dpo or rng.random() < 0.5 else "rf_nll") for g in groups]
        plain = pack_step(groups, sels, spec)
        shared = pack_step(groups, sels, dataclasses.replace(spec, shared_rows=True))
        assert len({tuple(mb.tokens_BS.shape) for mb in shared}) == 1, "one shape per step"
        want, got = Counter(), Counter()
        for mb in plain:
            want += _views(mb)
        for mb in shared:
            mb.validate()
            got += _views(mb)
            shared_total += int((mb.segment_ids_BS.amax(dim=1) > 0).sum())
            fell_back += int(((mb.segment_ids_BS.amax(dim=1) == 0) & (mb.rl_mask_BS.sum(dim=1) > 0)).sum())
        assert got == want, f"trial {trial}: a trained position sees something else when shared"
        den = local_denominators(plain)
        assert local_denominators(shared) == den
        for a, b in zip(plain, shared):
            for key, value in _loss(a, den).items():
                assert _loss(b, den)[key] == pytest.approx(value, rel=1e-12, abs=1e-12), (trial, key)
    assert shared_total > 30 and fell_back > 0  # both paths were exercised


def test_pool_with_different_prefix_cuts_keeps_unpacked_rows() -> None:
    # seq 4: the 2-token original keeps 3 prefix tokens, the 4-token rollout only 1.
    g = CandidateGroup(prefix=(1, 2, 3, 4, 5, 6), candidates=((7, 8), (9, 10, 11, 12)), kinds=("original", "rollout"),
                       scores=(0.0, 1.0), ref_logps=None, group_id=0)
    spec = PackSpec(seq_length=4, micro_batch_size=2, num_microbatches=1, shared_rows=True)
    (mb,) = pack_step([g], [select(g)], spec)
    assert mb.num_real_rows == 2 and not mb.segment_ids_BS.any()
    assert mb.tokens_BS.tolist() == [[4, 5, 6, 7], [6, 9, 10, 11]]  # exactly the unpacked rows
