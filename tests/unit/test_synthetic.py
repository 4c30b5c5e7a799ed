"""The deterministic candidate-group source used before a teacher exists."""

from __future__ import annotations

import pytest

from rlpt_plugin.rl.pool import CandidateKind
from rlpt_plugin.rl.synthetic import SyntheticGroups


def test_groups_are_a_pure_function_of_seed_and_id():
    a, b = SyntheticGroups(vocab_size=50), SyntheticGroups(vocab_size=50)
    assert a.group(7) == b.group(7)
    assert a.group(7) != a.group(8)
    assert SyntheticGroups(vocab_size=50, seed=1).group(7) != a.group(7)


def test_prefix_counts_and_scores_measure_how_well_a_candidate_keeps_counting():
    source = SyntheticGroups(vocab_size=20, suffix_length=5, num_rollouts=6)
    for gid in range(50):
        g = source.group(gid)
        prefix = list(g.prefix)
        step = lambda t: t % 19 + 1  # noqa: E731 - successor within [1, 20)
        assert all(step(x) == y for x, y in zip(prefix, prefix[1:]))
        truth, t = [], prefix[-1]
        for _ in range(5):
            t = step(t)
            truth.append(t)
        for cand, score in zip(g.candidates, g.scores):
            assert score == pytest.approx(sum(c == u for c, u in zip(cand, truth)) / 5)
            assert all(1 <= tok < 20 for tok in cand)
        assert g.kinds == (CandidateKind.ORIGINAL,) + (CandidateKind.ROLLOUT,) * 6


def test_invalid_settings_are_reported_together():
    with pytest.raises(ValueError) as info:
        SyntheticGroups(vocab_size=2, min_prefix=5, max_prefix=2, suffix_length=0, num_rollouts=0,
                        include_original=False)
    message = str(info.value)
    for field in ("`vocab_size`", "`min_prefix`", "`suffix_length`", "at least 2 candidates"):
        assert field in message
