"""Tests for rlpt_plugin.rl.pool: group validation, selection tie rules, stats."""

from __future__ import annotations

import math

import pytest

from rlpt_plugin.rl.pool import (
    CandidateGroup,
    CandidateKind,
    Selection,
    SelectionStats,
    select,
    select_all,
)

O, W, R = "original", "rewrite", "rollout"


def make(scores: list[float] | None, kinds: list[str] | None = None, gid: int = 0) -> CandidateGroup:
    n = len(scores) if scores is not None else 3
    kinds = kinds if kinds is not None else [R] * n
    cands = [[100 + i, 200 + i] for i in range(len(kinds))]
    return CandidateGroup(prefix=(1, 2), candidates=cands, kinds=kinds, scores=scores, ref_logps=None, group_id=gid)


# --- CandidateGroup ------------------------------------------------------------------------


def test_group_normalises_to_tuples_and_enum() -> None:
    g = CandidateGroup(prefix=[1, 2], candidates=[[3], [4, 5]], kinds=["original", "rollout"],
                       scores=[1, 0.5], ref_logps=[[-0.5], [-1.0, -2.0]], group_id=9)  # fmt: skip
    assert g.prefix == (1, 2)
    assert g.candidates == ((3,), (4, 5))
    assert g.kinds == (CandidateKind.ORIGINAL, CandidateKind.ROLLOUT)
    assert g.scores == (1.0, 0.5)
    assert g.ref_logps == ((-0.5,), (-1.0, -2.0))
    hash(g)  # frozen + tuples -> usable as a dict key


def test_original_index() -> None:
    assert make([0.0, 1.0, 2.0], [R, O, W]).original_index == 1
    assert make([0.0, 1.0], [R, W]).original_index is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kinds": [O, R]}, "len\\(kinds\\) must equal len\\(candidates\\)=3, got 2"),
        ({"candidates": [[1], [], [2]]}, "candidates\\[1\\] must be non-empty"),
        ({"candidates": []}, "candidates must be non-empty"),
        ({"scores": [0.0, math.nan, 1.0]}, "scores\\[1\\] must be finite, got nan"),
        ({"scores": [0.0, 1.0, math.inf]}, "scores\\[2\\] must be finite, got inf"),
        ({"scores": [0.0, 1.0]}, "len\\(scores\\) must equal len\\(candidates\\)=3, got 2"),
        ({"kinds": [O, O, R]}, "at most one 'original', got 2"),
        ({"kinds": [O, "teacher", R]}, "kinds\\[1\\] must be one of"),
        ({"ref_logps": [[-1.0], [-1.0], [-1.0]]}, "len\\(ref_logps\\[0\\]\\) must equal len\\(candidates\\[0\\]\\)=2, got 1"),
        ({"ref_logps": [[-1.0, -1.0]]}, "len\\(ref_logps\\) must equal len\\(candidates\\)=3, got 1"),
        ({"ref_logps": [[-1.0, math.nan]] * 3}, "ref_logps\\[0\\]\\[1\\] must be finite"),
        ({"group_id": -1}, "group_id must be an int >= 0, got -1"),
        ({"prefix": [1, 2.5]}, "prefix\\[1\\] must be an int token id"),
        ({"prefix": [1, -3]}, "prefix\\[1\\] must be a token id >= 0, got -3"),
    ],
)
def test_group_validation(kwargs: dict, match: str) -> None:
    base = dict(prefix=[1, 2], candidates=[[1, 2], [3, 4], [5, 6]], kinds=[O, W, R],
                scores=[0.0, 1.0, 2.0], ref_logps=None, group_id=0)  # fmt: skip
    base.update(kwargs)
    with pytest.raises(ValueError, match=match):
        CandidateGroup(**base)


# --- select ---------------------------------------------------------------------------------


def test_best_and_worst() -> None:
    assert select(make([0.2, 0.9, 0.1, 0.5])) == Selection(chosen=1, rejected=2, best=1, skip_reason=None)


def test_tie_at_max_takes_lowest_index() -> None:
    assert select(make([0.9, 0.1, 0.9])) == Selection(0, 1, 0)
    assert select(make([0.1, 0.9, 0.9]), rule="rf_nll") == Selection(None, None, 1)


def test_tie_at_min_takes_highest_index() -> None:
    assert select(make([0.1, 0.9, 0.1])) == Selection(1, 2, 1)
    assert select(make([-3.0, -3.0, 5.0, -3.0])) == Selection(2, 3, 2)


def test_ties_at_both_ends() -> None:
    assert select(make([0.3, 0.7, 0.3, 0.7])) == Selection(1, 2, 1)


def test_two_candidates() -> None:
    assert select(make([1.0, 2.0])) == Selection(1, 0, 1)


@pytest.mark.parametrize("rule", ["dpo", "rf_nll"])
def test_all_tied_selects_nothing(rule: str) -> None:
    assert select(make([0.5, 0.5, 0.5]), rule=rule) == Selection(None, None, None, "all_tied")


@pytest.mark.parametrize("rule", ["dpo", "rf_nll"])
def test_unjudged(rule: str) -> None:
    assert select(make(None), rule=rule) == Selection(None, None, None, "unjudged")


@pytest.mark.parametrize("rule", ["dpo", "rf_nll"])
def test_single_candidate(rule: str) -> None:
    assert select(make([0.7]), rule=rule) == Selection(None, None, None, "single_candidate")


def test_rf_nll_rule_fills_only_best() -> None:
    assert select(make([0.2, 0.9, 0.1]), rule="rf_nll") == Selection(None, None, 1, None)


def test_unknown_rule() -> None:
    with pytest.raises(ValueError, match="rule must be one of .* got 'ppo'"):
        select(make([0.0, 1.0]), rule="ppo")


def test_select_all_keeps_order() -> None:
    groups = [make([0.0, 1.0]), make(None), make([2.0, 1.0])]
    assert select_all(groups) == [Selection(1, 0, 1), Selection(None, None, None, "unjudged"), Selection(0, 1, 0)]


# --- Selection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, None, 1, None), "both be set or both be None"),
        ((1, 1, 1, None), "chosen must differ from rejected, got both = 1"),
        ((None, None, None, "bored"), "skip_reason must be None or one of"),
        ((0, 1, 0, "all_tied"), "skip_reason must be None when a candidate is selected"),
    ],
)
def test_selection_validation(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Selection(*args)


def test_selection_validate_for_out_of_range() -> None:
    with pytest.raises(ValueError, match="group 4: selection.rejected must be in \\[0, 2\\), got 5"):
        Selection(0, 5, 0).validate_for(make([0.0, 1.0], gid=4))


# --- SelectionStats -------------------------------------------------------------------------


def test_stats_rollout_chosen_rate() -> None:
    groups = [
        make([0.1, 0.9, 0.5], [O, R, W]),  # rollout chosen
        make([0.9, 0.1, 0.5], [O, R, W]),  # original chosen
        make([0.1, 0.2, 0.9], [O, W, R]),  # rollout chosen
        make(None, [O, R, W]),  # unjudged
        make([0.4, 0.4], [O, R]),  # all tied
        make([0.4], [R]),  # single candidate
        make([0.1, 0.8, 0.8], [O, W, R]),  # tie -> lowest index: rewrite chosen
    ]
    stats = SelectionStats.from_selections((g, select(g)) for g in groups)
    assert stats.num_groups == 7
    assert stats.num_pairs == 4
    assert stats.num_best == 4
    assert stats.skipped == {"unjudged": 1, "all_tied": 1, "single_candidate": 1}
    assert stats.chosen_kinds == {"rollout": 2, "original": 1, "rewrite": 1}
    assert stats.rollout_chosen_rate == pytest.approx(0.5)
    assert stats.rollout_best_rate == pytest.approx(0.5)
    assert (stats.num_targets, stats.rollout_targets) == (4, 2)  # the logged metric: chosen, else best


def test_stats_rf_nll_has_no_chosen_rate() -> None:
    groups = [make([0.1, 0.9], [O, R]), make([0.9, 0.1], [O, R]), make([0.0, 0.2, 0.1], [O, R, R])]
    stats = SelectionStats.from_selections((g, select(g, rule="rf_nll")) for g in groups)
    assert stats.num_pairs == 0
    assert stats.rollout_chosen_rate is None
    assert stats.rollout_best_rate == pytest.approx(2 / 3)
    assert (stats.num_targets, stats.rollout_targets) == (3, 2)  # no pair: the best is the target
    assert stats.skipped == {}


def test_stats_empty() -> None:
    stats = SelectionStats.from_selections([])
    assert (stats.num_groups, stats.num_pairs, stats.rollout_chosen_rate) == (0, 0, None)
