"""Pairing schedules on deterministic judges: best/worst agreement, comparison counts, determinism."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from rlpt_plugin.judge.schedules import (
    SCHEDULES,
    Pivot,
    RoundRobin,
    Tournament,
    drive,
    make_schedule,
    max_comparisons,
)


def total_order(n: int, rng: random.Random) -> Callable[[int, int], float]:
    """A noiseless judge: a hidden strength per candidate, the stronger always wins."""
    strength = list(range(n))
    rng.shuffle(strength)
    return lambda i, j: 1.0 if strength[i] > strength[j] else 0.0


def best_worst(scores: list[float]) -> tuple[int, int]:
    """select()'s tie rule: first maximum, last minimum."""
    hi, lo = max(scores), min(scores)
    return scores.index(hi), len(scores) - 1 - scores[::-1].index(lo)


@pytest.mark.parametrize("n", range(2, 18))
def test_tournament_best_and_worst_equal_round_robin_on_a_total_order(n: int) -> None:
    rng = random.Random(1000 + n)
    for trial in range(60):
        judge = total_order(n, rng)
        rr = drive(RoundRobin(n), judge)
        t = Tournament(n, seed=trial)
        ts = drive(t, judge)
        assert best_worst(ts) == best_worst(rr)
        assert (t.best, t.worst) == best_worst(rr)
        # best strictly highest, worst strictly lowest, all in [0, 1]
        assert sorted(ts)[-1] == 1.0 and sorted(ts)[-2] < 1.0
        assert sorted(ts)[0] == 0.0 and sorted(ts)[1] > 0.0
        assert all(0.0 <= s <= 1.0 for s in ts)


@pytest.mark.parametrize("n", range(1, 18))
def test_comparison_counts(n: int) -> None:
    rng = random.Random(n)
    judge = total_order(n, rng)
    noisy = lambda i, j: float(rng.random() < 0.5)  # noqa: E731 - any outcomes, even intransitive
    for name in SCHEDULES:
        for compare in (judge, noisy):
            s = make_schedule(name, n, seed=3)
            drive(s, compare)
            assert s.comparisons == max_comparisons(name, n)
    assert max_comparisons("round_robin", n) == n * (n - 1) // 2
    assert max_comparisons("pivot", n) == max(0, n - 1)
    # proven bound: floor(n/2) pair matches + 2 * (ceil(n/2) - 1) knockout matches
    expected = 0 if n < 2 else n // 2 + 2 * (math.ceil(n / 2) - 1)
    assert max_comparisons("tournament", n) == expected
    if n >= 2:
        assert expected == math.ceil(3 * n / 2) - 2 <= 1.5 * n
    # rounds: the pairing round, then knockouts on ceil(n/2) entrants
    t = Tournament(n, seed=0)
    drive(t, judge)
    assert t.rounds == (0 if n < 2 else 1 + math.ceil(math.log2(math.ceil(n / 2))))


def test_round_robin_scores_are_win_rates_with_fractional_outcomes() -> None:
    # P(0 beats 1) = 0.5, 0 beats 2, 1 beats 2 three quarters of the time
    table = {(0, 1): 0.5, (0, 2): 1.0, (1, 2): 0.75}
    s = RoundRobin(3)
    assert drive(s, lambda i, j: table[(i, j)]) == [0.75, 0.625, 0.125]
    assert RoundRobin(1).next_round() == [] and drive(RoundRobin(1), lambda i, j: 1.0) == [0.5]


def test_pivot_scores_and_pivot_choice() -> None:
    strength = [5, 9, 1, 7]
    beats = lambda i, j: float(strength[i] > strength[j])  # noqa: E731
    s = Pivot(4, pivot=3)
    assert s.next_round() == [(0, 3), (1, 3), (2, 3)]
    s.record([beats(0, 3), beats(1, 3), beats(2, 3)])
    assert s.next_round() == [] and s.scores() == [0.0, 1.0, 0.0, 0.5]
    assert drive(make_schedule("pivot", 4), beats) == [0.5, 1.0, 0.0, 1.0]  # default pivot: candidate 0
    with pytest.raises(ValueError, match=r"pivot must be an index in \[0, 4\)"):
        Pivot(4, pivot=4)


def test_tournament_rounds_depend_on_outcomes_and_run_both_knockouts_together() -> None:
    n = 8
    strength = [3, 7, 0, 5, 6, 1, 4, 2]
    t = Tournament(n, seed=11)
    first = t.next_round()
    assert len(first) == 4 and sorted(i for p in first for i in p) == list(range(n))
    t.record([float(strength[i] > strength[j]) for i, j in first])
    second = t.next_round()
    assert len(second) == 4  # 2 max-knockout + 2 min-knockout matches in one round
    winners = {i if strength[i] > strength[j] else j for i, j in first}
    assert {x for p in second[:2] for x in p} == winners
    assert {x for p in second[2:] for x in p} == set(range(n)) - winners
    with pytest.raises(RuntimeError, match="record"):
        t.next_round()


def test_seeded_determinism_and_seed_sensitivity() -> None:
    rng = random.Random(5)
    outcomes = {(i, j): rng.choice([0.0, 0.5, 1.0]) for i in range(13) for j in range(13)}
    compare = lambda i, j: outcomes[(i, j)]  # noqa: E731 - noisy, with exact ties (coin flips)

    def run(seed: int) -> tuple[list[tuple[int, int, float]], list[float]]:
        s = Tournament(13, seed=seed)
        scores = drive(s, compare)
        return s.history, scores

    assert run(42) == run(42)
    assert len({str(run(seed)[0][:6]) for seed in range(10)}) > 1  # the bracket depends on the seed
    for name in SCHEDULES:
        a, b = make_schedule(name, 9, seed=1), make_schedule(name, 9, seed=1)
        assert drive(a, compare) == drive(b, compare) and a.history == b.history


def test_tournament_intransitive_odd_candidate_winning_both_knockouts() -> None:
    # n = 3: candidates 0 and 1 are paired, 2 enters both knockouts. 2 beats the pair winner and
    # "loses" to the pair loser: best = 2, worst falls back to the lowest win rate among others.
    t = Tournament(3, seed=0)
    (pair,) = t.next_round()
    t.record([1.0])
    w, lo = pair
    odd = 3 - w - lo
    rnd = t.next_round()
    assert sorted(map(sorted, rnd)) == sorted([sorted((w, odd)), sorted((lo, odd))])
    table = {(odd, w): 1.0, (w, odd): 0.0, (odd, lo): 0.0, (lo, odd): 1.0}
    t.record([table[p] for p in rnd])
    assert t.next_round() == []
    scores = t.scores()
    assert t.best == odd and t.worst == max(w, lo)  # w and lo both won 1 of 2: highest index
    assert scores[odd] == 1.0 and scores[t.worst] == 0.0


def test_misuse_is_reported() -> None:
    s = RoundRobin(3)
    with pytest.raises(RuntimeError, match="no pending round"):
        s.record([])
    with pytest.raises(RuntimeError, match="before the schedule finished"):
        s.scores()
    s.next_round()
    with pytest.raises(ValueError, match="one value per pair"):
        s.record([1.0])
    with pytest.raises(ValueError, match=r"outcomes\[0\] must be in \[0, 1\]"):
        s.record([1.5, 0.0, 0.0])
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("swiss", 3)
    with pytest.raises(ValueError, match="n must be an int >= 1"):
        make_schedule("pivot", 0)
