"""Tests for rlpt_plugin.rl.packing: row layout, dedup, block placement, validation."""

from __future__ import annotations

import dataclasses
import random
from collections import Counter

import pytest
import torch

from rlpt_plugin.rl.packing import MicroBatch, PackSpec, Row, pack_rows, pack_step
from rlpt_plugin.rl.pool import CandidateGroup, Selection, select

O, W, R = "original", "rewrite", "rollout"
I64, F32 = torch.int64, torch.float32


def hand_group(ref: bool = False) -> CandidateGroup:
    # rewrite (idx 2) wins, rollout (idx 1) loses, original (idx 0) is the LM row.
    return CandidateGroup(
        prefix=(11, 12, 13),
        candidates=((21, 22), (31, 32, 33), (41,)),
        kinds=(O, R, W),
        scores=(0.5, 0.1, 0.9),
        ref_logps=((-1.0, -2.0), (-0.1, -0.2, -0.3), (-0.4,)) if ref else None,
        group_id=5,
    )


def hand_batch(**spec_kw: object) -> MicroBatch:
    spec = PackSpec(seq_length=6, micro_batch_size=4, num_microbatches=1, **spec_kw)  # type: ignore[arg-type]
    g = hand_group(ref=True)
    (mb,) = pack_step([g], [select(g)], spec)
    return mb


def test_hand_built_example_exact_tensors() -> None:
    mb = hand_batch()
    mb.validate()
    # rows in candidate order: original (LM), rollout (rejected), rewrite (chosen), padding
    assert torch.equal(mb.tokens_BS, torch.tensor(
        [[11, 12, 13, 21, 0, 0], [11, 12, 13, 31, 32, 0], [11, 12, 13, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=I64))
    assert torch.equal(mb.labels_BS, torch.tensor(
        [[12, 13, 21, 22, 0, 0], [12, 13, 31, 32, 33, 0], [12, 13, 41, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=I64))
    assert torch.equal(mb.lm_mask_BS, torch.tensor(
        [[1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=F32))
    assert torch.equal(mb.rl_mask_BS, torch.tensor(
        [[0, 0, 1, 1, 0, 0], [0, 0, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=F32))
    assert torch.equal(mb.position_ids_BS, torch.tensor([[0, 1, 2, 3, 4, 5]] * 4, dtype=I64))
    assert torch.equal(mb.ref_logps_BS, torch.zeros(4, 6))  # ref_from_rollout=False -> zeros
    assert mb.chosen_rows_P.tolist() == [2]
    assert mb.rejected_rows_P.tolist() == [1]
    assert mb.rf_rows_R.tolist() == []
    assert mb.group_ids_B.tolist() == [5, 5, 5, -1]
    assert mb.num_real_rows == 3  # fmt: skip


def test_pad_id_fills_padding_tokens_and_labels() -> None:
    mb = hand_batch(pad_id=99)
    assert mb.tokens_BS[2].tolist() == [11, 12, 13, 99, 99, 99]
    assert mb.labels_BS[2].tolist() == [12, 13, 41, 99, 99, 99]
    assert mb.tokens_BS[3].tolist() == [99] * 6


def test_ref_logps_placement_in_rollout_mode() -> None:
    mb = hand_batch(ref_from_rollout=True)
    expected = torch.tensor([[0, 0, -1.0, -2.0, 0, 0], [0, 0, -0.1, -0.2, -0.3, 0],
                             [0, 0, -0.4, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=F32)  # fmt: skip
    assert torch.equal(mb.ref_logps_BS, expected)


def test_rf_nll_row_is_the_best_and_merges_with_chosen() -> None:
    mb = hand_batch(use_rf_nll=True)
    assert mb.num_real_rows == 3
    assert mb.rf_rows_R.tolist() == [2]
    assert mb.chosen_rows_P.tolist() == [2]


def test_left_truncation_of_long_prefix() -> None:
    spec = PackSpec(seq_length=4, micro_batch_size=2, num_microbatches=1, use_dpo=False, use_rf_nll=True)
    g = CandidateGroup(prefix=(1, 2, 3, 4, 5, 6), candidates=((7, 8), (7, 8, 9, 10)), kinds=(R, R),
                       scores=(0.0, 1.0), ref_logps=None, group_id=0)  # fmt: skip
    (mb,) = pack_step([g], [select(g, rule="rf_nll")], spec)
    # only the best (idx 1, length == S) is a row: 1 prefix token survives
    assert mb.tokens_BS[0].tolist() == [6, 7, 8, 9]
    assert mb.labels_BS[0].tolist() == [7, 8, 9, 10]
    assert mb.rl_mask_BS[0].tolist() == [1, 1, 1, 1]
    g2 = dataclasses.replace(g, scores=(1.0, 0.0))
    (mb2,) = pack_step([g2], [select(g2, rule="rf_nll")], spec)
    assert mb2.tokens_BS[0].tolist() == [4, 5, 6, 7]  # keep S+1-2 = 3 prefix tokens: 4 5 6
    assert mb2.labels_BS[0].tolist() == [5, 6, 7, 8]
    assert mb2.rl_mask_BS[0].tolist() == [0, 0, 1, 1]


def test_candidate_longer_than_seq_length() -> None:
    spec = PackSpec(seq_length=3, micro_batch_size=2, num_microbatches=1)
    g = CandidateGroup(prefix=(1,), candidates=((2, 3, 4, 5), (6,)), kinds=(O, R), scores=None,
                       ref_logps=None, group_id=3)  # fmt: skip
    with pytest.raises(ValueError, match="group 3: candidates\\[0\\] has 4 tokens, must be <= seq_length=3"):
        pack_step([g], [select(g)], spec)


def test_empty_prefix_rejected() -> None:
    g = CandidateGroup(prefix=(), candidates=((2,),), kinds=(O,), scores=None, ref_logps=None, group_id=1)
    with pytest.raises(ValueError, match="group 1: prefix must keep >= 1 token"):
        pack_step([g], [select(g)], PackSpec(seq_length=4, micro_batch_size=1, num_microbatches=1))


def two_cand(orig_score: float, roll_score: float) -> CandidateGroup:
    return CandidateGroup(prefix=(1, 2), candidates=((3, 4), (5,)), kinds=(O, R),
                          scores=(orig_score, roll_score), ref_logps=None, group_id=8)  # fmt: skip


def test_dedup_when_original_is_chosen() -> None:
    g = two_cand(1.0, 0.0)
    spec = PackSpec(seq_length=4, micro_batch_size=3, num_microbatches=1, use_rf_nll=True)
    (mb,) = pack_step([g], [select(g)], spec)
    assert mb.num_real_rows == 2
    assert mb.tokens_BS[:2].tolist() == [[1, 2, 3, 0], [1, 2, 0, 0]]
    assert mb.lm_mask_BS[:2].tolist() == [[1, 1, 1, 0], [0, 0, 0, 0]]
    assert (mb.chosen_rows_P.tolist(), mb.rejected_rows_P.tolist(), mb.rf_rows_R.tolist()) == ([0], [1], [0])


def test_dedup_when_original_is_rejected() -> None:
    g = two_cand(0.0, 1.0)
    spec = PackSpec(seq_length=4, micro_batch_size=3, num_microbatches=1)
    (mb,) = pack_step([g], [select(g)], spec)
    assert mb.num_real_rows == 2
    assert mb.lm_mask_BS[:2].tolist() == [[1, 1, 1, 0], [0, 0, 0, 0]]
    assert (mb.chosen_rows_P.tolist(), mb.rejected_rows_P.tolist()) == ([1], [0])


def test_blocks_are_contiguous_and_near_equal() -> None:
    groups = [CandidateGroup(prefix=(1,), candidates=((2,),), kinds=(O,), scores=None, ref_logps=None,
                             group_id=10 + i) for i in range(5)]  # fmt: skip
    spec = PackSpec(seq_length=2, micro_batch_size=4, num_microbatches=2)
    mbs = pack_step(groups, [select(g) for g in groups], spec)
    assert [mb.group_ids_B.tolist() for mb in mbs] == [[10, 11, -1, -1], [12, 13, 14, -1]]
    mbs = pack_step(groups[:1], [select(groups[0])], spec)  # fewer groups than micro-batches
    assert [mb.group_ids_B.tolist() for mb in mbs] == [[-1, -1, -1, -1], [10, -1, -1, -1]]


def test_overflow_error_message() -> None:
    groups = [hand_group(), dataclasses.replace(hand_group(), group_id=6)]  # 3 rows each
    spec = PackSpec(seq_length=6, micro_batch_size=4, num_microbatches=1)
    with pytest.raises(ValueError) as err:
        pack_step(groups, [select(g) for g in groups], spec)
    msg = str(err.value)
    for part in ("needs 6 rows", "micro_batch_size is 4", "6 rows vs 1 x 4 = 4 available",
                 "larger micro_batch_size", "fewer groups per step"):  # fmt: skip
        assert part in msg, msg


def test_config_errors() -> None:
    g = hand_group()
    spec = PackSpec(seq_length=6, micro_batch_size=4, num_microbatches=1)
    with pytest.raises(ValueError, match="rule='dpo'"):
        pack_step([g], [select(g, rule="rf_nll")], spec)
    with pytest.raises(ValueError, match="group 5: ref_logps must be set when ref_from_rollout=True"):
        pack_step([g], [select(g)], dataclasses.replace(spec, ref_from_rollout=True))
    with pytest.raises(ValueError, match="group_id must be unique within a step, got 5 twice"):
        pack_step([g, g], [select(g)] * 2, dataclasses.replace(spec, micro_batch_size=8))
    with pytest.raises(ValueError, match="selections must have one entry per group \\(1\\), got 0"):
        pack_step([g], [], spec)
    with pytest.raises(ValueError, match="PackSpec.micro_batch_size must be an int >= 1, got 0"):
        PackSpec(seq_length=6, micro_batch_size=0, num_microbatches=1)


def row(gid: int, roles: set[str], pair: int | None) -> Row:
    return Row(group_id=gid, tokens=(1, 2, 3), candidate_length=1, roles=frozenset(roles), pair_id=pair)


def test_pack_rows_split_pair_and_overflow() -> None:
    spec = PackSpec(seq_length=4, micro_batch_size=2, num_microbatches=2)
    rows = [row(0, {"chosen"}, 7), row(0, {"rejected"}, 7)]
    with pytest.raises(ValueError, match="pair 7 is split across micro-batches 0 and 1"):
        pack_rows(rows, [1, 0], spec)
    with pytest.raises(ValueError, match="pair 7 must have one chosen and one rejected row"):
        pack_rows(rows[:1], [0], spec)
    with pytest.raises(ValueError, match="needs 3 rows"):
        pack_rows([*rows, row(1, {"rf"}, None)], [0, 0, 0], spec)
    with pytest.raises(ValueError, match="assignment of a row of group 0 must be in \\[0, 2\\), got 2"):
        pack_rows(rows, [2, 2], spec)
    mbs = pack_rows(rows, [1, 1], spec)
    assert mbs[1].chosen_rows_P.tolist() == [0] and mbs[1].rejected_rows_P.tolist() == [1]
    assert mbs[0].num_real_rows == 0


def test_row_validation() -> None:
    with pytest.raises(ValueError, match="candidate_length must be in \\[1, len\\(tokens\\)=3\\)"):
        Row(group_id=0, tokens=(1, 2, 3), candidate_length=3, lm=True)
    with pytest.raises(ValueError, match="pair_id must be set exactly when"):
        Row(group_id=0, tokens=(1, 2, 3), candidate_length=1, roles={"chosen"})
    with pytest.raises(ValueError, match="row has no loss"):
        Row(group_id=0, tokens=(1, 2, 3), candidate_length=1)


def _replace(mb: MicroBatch, **kw: object) -> MicroBatch:
    return dataclasses.replace(mb, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda mb: _replace(mb, tokens_BS=mb.tokens_BS.int()), "tokens_BS must be a torch.int64"),
        (lambda mb: _replace(mb, lm_mask_BS=mb.lm_mask_BS.double()), "lm_mask_BS must be a torch.float32"),
        (lambda mb: _replace(mb, labels_BS=mb.labels_BS[:, :5]), "labels_BS must have shape \\(4, 6\\)"),
        (lambda mb: _replace(mb, group_ids_B=mb.group_ids_B[:3]), "group_ids_B must have length B=4"),
        (lambda mb: _replace(mb, chosen_rows_P=torch.tensor([4])), "chosen_rows_P must index rows in \\[0, 4\\)"),
        (lambda mb: _replace(mb, rejected_rows_P=torch.tensor([-1])), "rejected_rows_P must index rows"),
        (lambda mb: _replace(mb, rf_rows_R=torch.tensor([3])), "rf_rows_R: rows \\[3\\] have an empty rl_mask"),
        (lambda mb: _replace(mb, rejected_rows_P=torch.tensor([2])), "pairs \\[0\\] have chosen row == rejected"),
        (lambda mb: _replace(mb, rejected_rows_P=torch.tensor([1, 0])), "same length"),
        (lambda mb: _replace(mb, num_real_rows=2), "group_ids_B must be >= 0 for the 2 real rows"),
        (lambda mb: _replace(mb, rl_mask_BS=mb.rl_mask_BS * 2), "rl_mask_BS must hold only 0 and 1"),
        (lambda mb: _replace(mb, chosen_rows_P=mb.chosen_rows_P.float()), "chosen_rows_P must be a torch.int64"),
    ],
)
def test_validate_catches(mutate, match: str) -> None:  # type: ignore[no-untyped-def]
    mb = hand_batch()
    mb.validate()
    with pytest.raises(ValueError, match=match):
        mutate(mb).validate()


def test_validate_catches_masked_padding_row() -> None:
    mb = hand_batch()
    mb.lm_mask_BS[3, 0] = 1.0
    with pytest.raises(ValueError, match="padding rows .* must have all-zero masks"):
        mb.validate()


def _random_group(rng: random.Random, gid: int) -> CandidateGroup:
    n = rng.randint(1, 5)
    kinds = [rng.choice([W, R]) for _ in range(n)]
    if rng.random() < 0.7:
        kinds[rng.randrange(n)] = O
    cands = [tuple(rng.randint(1, 50) for _ in range(rng.randint(1, 6))) for _ in range(n)]
    scores = None if rng.random() < 0.15 else tuple(float(rng.randint(0, 3)) for _ in range(n))
    refs = tuple(tuple(-rng.random() for _ in c) for c in cands)
    prefix = tuple(rng.randint(1, 50) for _ in range(rng.randint(1, 12)))
    return CandidateGroup(prefix=prefix, candidates=tuple(cands), kinds=tuple(kinds), scores=scores,
                          ref_logps=refs, group_id=gid)  # fmt: skip


def _expected_indices(g: CandidateGroup, sel: Selection, spec: PackSpec) -> set[int]:
    out: set[int] = set()
    if spec.lm_on_window and O in g.kinds:
        out.add(list(g.kinds).index(O))
    if spec.use_dpo and sel.chosen is not None:
        out |= {sel.chosen, sel.rejected}  # type: ignore[arg-type]
    if spec.use_rf_nll and sel.best is not None:
        out.add(sel.best)
    return out


def test_random_configurations_property() -> None:
    rng = random.Random(1234)
    checked = 0
    for trial in range(300):
        flags = [rng.random() < 0.5 for _ in range(3)]
        if not any(flags):
            flags[0] = True
        num_groups, m = rng.randint(0, 9), rng.randint(1, 4)
        seq = rng.randint(6, 20)
        groups = [_random_group(rng, 1000 * trial + i) for i in range(num_groups)]
        spec0 = PackSpec(seq_length=seq, micro_batch_size=1, num_microbatches=m, lm_on_window=flags[0],
                         use_dpo=flags[1], use_rf_nll=flags[2], ref_from_rollout=rng.random() < 0.5)  # fmt: skip
        sels = [select(g, rule="dpo" if spec0.use_dpo or rng.random() < 0.5 else "rf_nll") for g in groups]
        want = [_expected_indices(g, s, spec0) for g, s in zip(groups, sels)]
        need = [sum(len(want[i]) for i in range(k * num_groups // m, (k + 1) * num_groups // m)) for k in range(m)]
        spec = dataclasses.replace(spec0, micro_batch_size=max(1, max(need)) + rng.randint(0, 2))
        if max(need) > 1 and rng.random() < 0.2:
            with pytest.raises(ValueError, match="larger micro_batch_size"):
                pack_step(groups, sels, dataclasses.replace(spec, micro_batch_size=max(need) - 1))
        mbs = pack_step(groups, sels, spec)
        assert len(mbs) == m
        got: Counter[tuple[int, tuple[int, ...]]] = Counter()
        mb_of_group: dict[int, set[int]] = {}
        by_gid = {g.group_id: (g, s) for g, s in zip(groups, sels)}
        for k, mb in enumerate(mbs):
            mb.validate()
            assert mb.tokens_BS.shape == (spec.micro_batch_size, seq)
            assert mb.num_real_rows == need[k]
            real = mb.num_real_rows
            assert not mb.lm_mask_BS[real:].any() and not mb.rl_mask_BS[real:].any()
            assert (mb.group_ids_B[real:] == -1).all()
            for b in range(real):
                gid = int(mb.group_ids_B[b])
                cand = tuple(mb.labels_BS[b][mb.rl_mask_BS[b] == 1].tolist())
                got[(gid, cand)] += 1
                mb_of_group.setdefault(gid, set()).add(k)
                g = by_gid[gid][0]
                n_lab = int((mb.rl_mask_BS[b] + mb.lm_mask_BS[b]).nonzero().max()) + 1
                ctx = mb.tokens_BS[b, : n_lab - len(cand) + 1].tolist()
                assert len(ctx) == min(len(g.prefix), seq + 1 - len(cand))
                assert tuple(ctx) == g.prefix[-len(ctx):], "prefix must be left-truncated"
                if mb.lm_mask_BS[b].any():
                    assert cand == g.candidates[g.original_index]  # type: ignore[index]
                if spec.ref_from_rollout:
                    idx = g.candidates.index(cand)
                    ref = mb.ref_logps_BS[b][mb.rl_mask_BS[b] == 1]
                    if g.candidates.count(cand) == 1:
                        assert torch.allclose(ref, torch.tensor(g.ref_logps[idx]))  # type: ignore[index]
            for c, r in zip(mb.chosen_rows_P.tolist(), mb.rejected_rows_P.tolist()):
                g, s = by_gid[int(mb.group_ids_B[c])]
                assert int(mb.group_ids_B[r]) == g.group_id  # same micro-batch, same group
                assert tuple(mb.labels_BS[c][mb.rl_mask_BS[c] == 1].tolist()) == g.candidates[s.chosen]
                assert tuple(mb.labels_BS[r][mb.rl_mask_BS[r] == 1].tolist()) == g.candidates[s.rejected]
                checked += 1
        expected = Counter((g.group_id, g.candidates[i]) for g, w in zip(groups, want) for i in w)
        assert got == expected, "every selected row exactly once, nothing lost or duplicated"
        assert all(len(v) == 1 for v in mb_of_group.values()), "a group is never split"
        n_pairs = sum(len(mb.chosen_rows_P) for mb in mbs)
        assert n_pairs == (sum(s.chosen is not None for s in sels) if spec.use_dpo else 0)
    assert checked > 100  # the loop really exercised pairs


# --- LM-only rows from outside the groups (the job's own pretraining data) ------------------------

def lm_row(index: int, length: int = 7, masked: tuple[int, ...] = ()) -> Row:
    tokens = tuple(100 + index * 10 + i for i in range(length))
    mask = tuple(0.0 if i in masked else 1.0 for i in range(length - 1))
    return Row(group_id=index, tokens=tokens, candidate_length=length - 1, lm=True, lm_mask=mask)


def test_lm_rows_follow_the_groups_rows_spread_over_micro_batches() -> None:
    groups = [dataclasses.replace(hand_group(), group_id=i) for i in range(2)]  # 3 rows each
    selections = [select(g) for g in groups]
    spec = PackSpec(seq_length=6, micro_batch_size=5, num_microbatches=2)
    rows = [lm_row(i, masked=(2,) if i == 1 else ()) for i in range(3)]
    mbs = pack_step(groups, selections, spec, rows)
    for mb in mbs:
        mb.validate()
    # block_bounds(3, 2): micro-batch 0 takes LM row 0, micro-batch 1 LM rows 1 and 2, each after
    # its group's rows.
    assert mbs[0].group_ids_B.tolist() == [0, 0, 0, 0, -1] and mbs[0].num_real_rows == 4
    assert mbs[1].group_ids_B.tolist() == [1, 1, 1, 1, 2] and mbs[1].num_real_rows == 5
    for mb, b, index in ((mbs[0], 3, 0), (mbs[1], 3, 1), (mbs[1], 4, 2)):
        assert mb.tokens_BS[b].tolist() == list(lm_row(index).tokens[:-1])
        assert mb.labels_BS[b].tolist() == list(lm_row(index).tokens[1:])
    assert mbs[1].lm_mask_BS[3].tolist() == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0]  # the masked label
    assert mbs[1].lm_mask_BS[4].tolist() == [1.0] * 6
    assert (mbs[1].chosen_rows_P.tolist(), mbs[1].rejected_rows_P.tolist()) == ([2], [1])  # group rows only
    # Capacity counts the LM-only rows and the error names them.
    with pytest.raises(ValueError, match=r"micro-batch 1 needs 6 rows \(groups 1..1 and 3 LM-only rows\)"):
        pack_step(groups, selections, spec, [*rows, lm_row(3), lm_row(4)])


def test_lm_rows_must_be_lm_only_and_masks_must_fit() -> None:
    g = hand_group()
    spec = PackSpec(seq_length=6, micro_batch_size=4, num_microbatches=1)
    with pytest.raises(ValueError, match="lm_rows must be LM-only rows"):
        pack_step([g], [select(g)], spec, [Row(group_id=0, tokens=(1, 2, 3), candidate_length=2, roles={"rf"})])
    with pytest.raises(ValueError, match="one 0/1 per label position"):
        Row(group_id=0, tokens=(1, 2, 3), candidate_length=2, lm=True, lm_mask=(1.0,))
    with pytest.raises(ValueError, match="no LM loss"):
        Row(group_id=0, tokens=(1, 2, 3), candidate_length=2, roles={"rf"}, lm_mask=(1.0, 1.0))
