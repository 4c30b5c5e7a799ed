"""Pairing schedules for the pairwise quality axis: which pairs to compare, and the scores.

A schedule is a small state machine, pure and deterministic given its seed and the outcomes fed
to it::

    sched = make_schedule("tournament", n, seed=7)
    while pairs := sched.next_round():            # a list of (i, j) to compare concurrently
        sched.record([p_i_beats_j(i, j) for i, j in pairs])
    scores = sched.scores()                       # one float in [0, 1] per candidate

An outcome is the fraction of judgments in which the FIRST index of the pair won: 1.0 / 0.0 for
one clean answer, anything in between when several samples or both presentation orders were
averaged (position bias is handled by the judge, not here). Later rounds may depend on earlier
outcomes (tournament); the judge drives the loop asynchronously.

Schedules (``n`` candidates; comparisons for ``n >= 2``):

* ``round_robin`` (the paper): all ``n(n-1)/2`` pairs in one round; score = win rate over the
  candidate's ``n-1`` comparisons (fractional outcomes count fractionally).
* ``pivot``: every candidate against one pivot (the original suffix when the pool has one, else
  candidate 0): ``n-1`` comparisons in one round. score = the outcome against the pivot (1 win,
  0 loss); the pivot itself gets 0.5, i.e. it ranks between the candidates that beat it and
  those that lost to it. Many ties by construction; ``select()``'s tie rule breaks them.
* ``tournament``: best and worst in ``ceil(3n/2) - 2`` comparisons (exactly that many, for any
  outcomes). Round 1 pairs the candidates in a seeded random order (``floor(n/2)``
  comparisons); the pair winners enter a knockout for the maximum, the pair losers a knockout
  for the minimum (the loser advances there), both ``ceil(n/2) - 1`` comparisons, played in the
  same rounds; with odd ``n`` the unpaired candidate enters both knockouts, and the last entrant
  of an odd-sized knockout round gets a bye. About ``1 + ceil(log2(n/2))`` rounds.
  A pair outcome of exactly 0.5 (e.g. both orders disagreed) is decided by the schedule's
  seeded coin. Scores: the max-knockout champion 1.0, the min-knockout champion 0.0, every
  other candidate ``0.05 + 0.9 * (its win rate over the comparisons it played)``, so the best
  is strictly highest and the worst strictly lowest and the rest are ordered roughly by how far
  they got. With a noiseless judge (a total order) the champion is the true best and the
  min-champion the true worst, as with round robin. With an intransitive (noisy) judge the
  unpaired candidate of an odd pool can win BOTH knockouts; it then stays best (1.0) and the
  worst (0.0) is, among the others, the lowest win rate (ties: the highest index, like
  ``select()``).

For ``n == 1`` no comparison is made and the single candidate scores 0.5.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

Pair = tuple[int, int]

ROUND_ROBIN = "round_robin"
PIVOT = "pivot"
TOURNAMENT = "tournament"
SCHEDULES: tuple[str, ...] = (ROUND_ROBIN, PIVOT, TOURNAMENT)


class Schedule(ABC):
    """Base class: round bookkeeping, outcome validation and per-candidate win tallies."""

    name: ClassVar[str]

    def __init__(self, n: int, seed: int = 0) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.n = n
        self.seed = seed
        self._rng = random.Random(seed)
        self._pending: list[Pair] | None = None
        self._done = False
        self.history: list[tuple[int, int, float]] = []  # (i, j, P(i beats j)) in record order
        self.rounds = 0
        self._wins = [0.0] * n
        self._played = [0] * n

    # -- driver API -------------------------------------------------------------------------

    @property
    def comparisons(self) -> int:
        """Comparisons recorded so far."""
        return len(self.history)

    @property
    def done(self) -> bool:
        return self._done

    def next_round(self) -> list[Pair]:
        """The next round's pairs (compare them concurrently), or ``[]`` when finished."""
        if self._pending is not None:
            raise RuntimeError(f"{self.name}: record() the pending round of {len(self._pending)} pairs first")
        if self._done:
            return []
        pairs = self._plan()
        if not pairs:
            self._done = True
            return []
        self._pending = list(pairs)
        return list(pairs)

    def record(self, outcomes: Sequence[float]) -> None:
        """Feed P(first beats second) for each pair of the pending round, in round order."""
        if self._pending is None:
            raise RuntimeError(f"{self.name}: no pending round; call next_round() first")
        pairs = self._pending
        if len(outcomes) != len(pairs):
            raise ValueError(f"outcomes must have one value per pair ({len(pairs)}), got {len(outcomes)}")
        values: list[float] = []
        for k, o in enumerate(outcomes):
            v = float(o)
            if not (0.0 <= v <= 1.0):
                raise ValueError(f"outcomes[{k}] must be in [0, 1], got {o!r}")
            values.append(v)
        for (i, j), v in zip(pairs, values):
            self.history.append((i, j, v))
            self._wins[i] += v
            self._wins[j] += 1.0 - v
            self._played[i] += 1
            self._played[j] += 1
        self._pending = None
        self.rounds += 1
        self._apply(pairs, values)

    def scores(self) -> list[float]:
        """One score per candidate in [0, 1]; only once the schedule is finished."""
        if self._pending is not None or not self._done:
            raise RuntimeError(f"{self.name}: scores() before the schedule finished; drive next_round() to []")
        if self.n == 1:
            return [0.5]
        return self._scores()

    def win_rate(self, i: int) -> float:
        """Fraction of candidate ``i``'s recorded comparisons it won (0.5 if it played none)."""
        return self._wins[i] / self._played[i] if self._played[i] else 0.5

    @staticmethod
    @abstractmethod
    def max_comparisons(n: int) -> int:
        """Upper bound on comparisons for ``n`` candidates (exact for these schedules)."""

    # -- per schedule -----------------------------------------------------------------------

    @abstractmethod
    def _plan(self) -> list[Pair]: ...

    def _apply(self, pairs: list[Pair], outcomes: list[float]) -> None:  # noqa: B027 - optional hook
        """Update state after a round (schedules whose rounds depend on outcomes)."""

    @abstractmethod
    def _scores(self) -> list[float]: ...

    def _first_wins(self, outcome: float) -> bool:
        """Decide a knockout match; an exact 0.5 is a seeded coin flip."""
        if outcome > 0.5:
            return True
        if outcome < 0.5:
            return False
        return self._rng.random() < 0.5


class RoundRobin(Schedule):
    """All pairs once; score = win rate."""

    name = ROUND_ROBIN

    @staticmethod
    def max_comparisons(n: int) -> int:
        return n * (n - 1) // 2

    def _plan(self) -> list[Pair]:
        if self.rounds:
            return []
        return [(i, j) for i in range(self.n) for j in range(i + 1, self.n)]

    def _scores(self) -> list[float]:
        return [self._wins[i] / (self.n - 1) for i in range(self.n)]


class Pivot(Schedule):
    """Everyone against one pivot; score = outcome vs the pivot, the pivot 0.5."""

    name = PIVOT

    def __init__(self, n: int, seed: int = 0, pivot: int | None = None) -> None:
        super().__init__(n, seed)
        p = 0 if pivot is None else pivot
        if isinstance(p, bool) or not isinstance(p, int) or not 0 <= p < n:
            raise ValueError(f"pivot must be an index in [0, {n}), got {pivot!r}")
        self.pivot = p

    @staticmethod
    def max_comparisons(n: int) -> int:
        return max(0, n - 1)

    def _plan(self) -> list[Pair]:
        if self.rounds:
            return []
        return [(i, self.pivot) for i in range(self.n) if i != self.pivot]

    def _scores(self) -> list[float]:
        out = [0.5] * self.n
        for i, _, v in self.history:
            out[i] = v
        return out


class Tournament(Schedule):
    """Pair round, then a max knockout over pair winners and a min knockout over pair losers."""

    name = TOURNAMENT

    def __init__(self, n: int, seed: int = 0) -> None:
        super().__init__(n, seed)
        order = list(range(n))
        self._rng.shuffle(order)
        self._order = order
        self._max_alive: list[int] | None = None  # None until the pairing round is recorded
        self._min_alive: list[int] | None = None
        self._n_max_pairs = 0
        if n == 1:
            self._max_alive, self._min_alive = [0], [0]

    @staticmethod
    def max_comparisons(n: int) -> int:
        return 0 if n < 2 else math.ceil(3 * n / 2) - 2

    def _plan(self) -> list[Pair]:
        if self._max_alive is None:
            o = self._order
            return [(o[k], o[k + 1]) for k in range(0, self.n - 1, 2)]
        assert self._min_alive is not None
        max_pairs = [(self._max_alive[k], self._max_alive[k + 1]) for k in range(0, len(self._max_alive) - 1, 2)]
        min_pairs = [(self._min_alive[k], self._min_alive[k + 1]) for k in range(0, len(self._min_alive) - 1, 2)]
        self._n_max_pairs = len(max_pairs)
        return max_pairs + min_pairs

    def _apply(self, pairs: list[Pair], outcomes: list[float]) -> None:
        decided = [(i, j) if self._first_wins(v) else (j, i) for (i, j), v in zip(pairs, outcomes)]
        if self._max_alive is None:
            winners = [w for w, _ in decided]
            losers = [lo for _, lo in decided]
            if self.n % 2:
                winners.append(self._order[-1])
                losers.append(self._order[-1])
            self._max_alive, self._min_alive = winners, losers
            return
        assert self._min_alive is not None
        k = self._n_max_pairs
        max_bye = self._max_alive[-1:] if len(self._max_alive) % 2 else []
        min_bye = self._min_alive[-1:] if len(self._min_alive) % 2 else []
        self._max_alive = [w for w, _ in decided[:k]] + max_bye
        self._min_alive = [lo for _, lo in decided[k:]] + min_bye

    @property
    def best(self) -> int:
        """The max-knockout champion (after the schedule finished)."""
        if not self._done or self._max_alive is None or len(self._max_alive) != 1:
            raise RuntimeError("tournament: best is known only once the schedule finished")
        return self._max_alive[0]

    @property
    def worst(self) -> int:
        """The min-knockout champion, or the documented replacement when it equals ``best``."""
        best = self.best
        assert self._min_alive is not None
        w = self._min_alive[0]
        if w != best or self.n == 1:
            return w
        rates = [(self.win_rate(i), -i) for i in range(self.n) if i != best]
        return -min(rates)[1]

    def _scores(self) -> list[float]:
        best, worst = self.best, self.worst
        out = [0.05 + 0.9 * self.win_rate(i) for i in range(self.n)]
        out[best], out[worst] = 1.0, 0.0
        return out


def make_schedule(name: str, n: int, *, seed: int = 0, pivot: int | None = None) -> Schedule:
    """A fresh schedule by name; ``pivot`` is used by ``pivot`` only (default candidate 0)."""
    if name == ROUND_ROBIN:
        return RoundRobin(n, seed)
    if name == PIVOT:
        return Pivot(n, seed, pivot)
    if name == TOURNAMENT:
        return Tournament(n, seed)
    raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")


def max_comparisons(name: str, n: int) -> int:
    """The exact number of comparisons ``name`` makes for ``n`` candidates (before positions
    and samples multiply it)."""
    cls = {ROUND_ROBIN: RoundRobin, PIVOT: Pivot, TOURNAMENT: Tournament}.get(name)
    if cls is None:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {name!r}")
    return cls.max_comparisons(n)


def drive(schedule: Schedule, compare: Callable[[int, int], float]) -> list[float]:
    """Run ``schedule`` to the end with a synchronous ``compare(i, j) -> P(i beats j)``."""
    while pairs := schedule.next_round():
        schedule.record([compare(i, j) for i, j in pairs])
    return schedule.scores()
