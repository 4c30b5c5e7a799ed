"""Candidate pools for one document prefix and the judge-driven selection.

A *group* is one document prefix together with its pool of candidate
continuations (the original suffix, a teacher rewrite, K policy rollouts).
The judge gives each candidate a scalar reward; :func:`select` turns those
rewards into the rows the trainer uses (a DPO pair and/or the best candidate
for reward-filtered NLL). Everything here is plain Python: no tensors, so the
selection can be computed and logged on any rank before packing.
"""

from __future__ import annotations

import enum
import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlpt_plugin.types import token_ids


class CandidateKind(enum.StrEnum):
    """Where a candidate continuation came from."""

    ORIGINAL = "original"
    REWRITE = "rewrite"
    ROLLOUT = "rollout"


SKIP_UNJUDGED = "unjudged"
SKIP_ALL_TIED = "all_tied"
SKIP_SINGLE_CANDIDATE = "single_candidate"
SKIP_FEW_ROLLOUTS = "few_rollouts"
SKIP_REASONS: tuple[str, ...] = (SKIP_UNJUDGED, SKIP_ALL_TIED, SKIP_SINGLE_CANDIDATE, SKIP_FEW_ROLLOUTS)

RULE_DPO = "dpo"
RULE_RF_NLL = "rf_nll"
RULE_GRPO = "grpo"
RULES: tuple[str, ...] = (RULE_DPO, RULE_RF_NLL, RULE_GRPO)

FALLBACK_DROP = "drop"
FALLBACK_RF_NLL_ON_ORIGINAL = "rf_nll_on_original"
FALLBACKS: tuple[str, ...] = (FALLBACK_DROP, FALLBACK_RF_NLL_ON_ORIGINAL)




def _finite_floats(name: str, values: Iterable[Any]) -> tuple[float, ...]:
    out: list[float] = []
    for pos, v in enumerate(values):
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"{name}[{pos}] must be a float, got {v!r}") from None
        if not math.isfinite(f):
            raise ValueError(f"{name}[{pos}] must be finite, got {f}")
        out.append(f)
    return tuple(out)


def original_index(kinds: tuple[str, ...]) -> int | None:
    """Index of the ``"original"`` candidate among ``kinds``, or ``None`` if there is none."""
    try:
        return kinds.index(CandidateKind.ORIGINAL)
    except ValueError:
        return None


@dataclass(frozen=True)
class CandidateGroup:
    """One prefix and its judged (or not yet judged) candidate pool.

    Attributes:
        prefix: token ids of the document prefix (the shared context).
        candidates: suffix token ids per candidate; each non-empty.
        kinds: provenance of each candidate, ``len(kinds) == len(candidates)``;
            at most one ``"original"``.
        scores: judge reward per candidate, or ``None`` when not judged (the
            group then only feeds the LM term).
        ref_logps: per-token reference log-probs per candidate, recorded when
            the rollout was generated; ``len(ref_logps[i]) == len(candidates[i])``.
        group_id: stable non-negative id (e.g. the global sample index);
            ``-1`` is reserved for padding rows downstream.
        lm_original: the document's original suffix when it is NOT a candidate
            (a rollouts-only pool), so the LM term still trains on the document;
            ``None`` when the pool holds the original (or there is none).

    Sequences are normalised to tuples (and kinds to :class:`CandidateKind`) so
    the group stays hashable and immutable whatever the caller passed in.
    """

    prefix: tuple[int, ...]
    candidates: tuple[tuple[int, ...], ...]
    kinds: tuple[CandidateKind, ...]
    scores: tuple[float, ...] | None
    ref_logps: tuple[tuple[float, ...], ...] | None
    group_id: int
    lm_original: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.group_id, bool) or not isinstance(self.group_id, int) or self.group_id < 0:
            raise ValueError(f"group_id must be an int >= 0, got {self.group_id!r}")
        gid = self.group_id
        object.__setattr__(self, "prefix", token_ids(f"group {gid}: prefix", self.prefix))
        if self.lm_original is not None:
            lm_original = token_ids(f"group {gid}: lm_original", self.lm_original)
            if not lm_original:
                raise ValueError(f"group {gid}: lm_original must be None or non-empty, got 0 tokens")
            if CandidateKind.ORIGINAL in tuple(self.kinds):
                raise ValueError(f"group {gid}: lm_original must be None when the original suffix "
                                 "is a candidate (its row already feeds the LM term)")
            object.__setattr__(self, "lm_original", lm_original)

        cands = tuple(
            token_ids(f"group {gid}: candidates[{i}]", c) for i, c in enumerate(self.candidates)
        )
        if not cands:
            raise ValueError(f"group {gid}: candidates must be non-empty, got 0 candidates")
        for i, c in enumerate(cands):
            if not c:
                raise ValueError(f"group {gid}: candidates[{i}] must be non-empty, got 0 tokens")
        object.__setattr__(self, "candidates", cands)

        kinds: list[CandidateKind] = []
        for i, k in enumerate(self.kinds):
            try:
                kinds.append(CandidateKind(k))
            except ValueError:
                allowed = [m.value for m in CandidateKind]
                raise ValueError(f"group {gid}: kinds[{i}] must be one of {allowed}, got {k!r}") from None
        if len(kinds) != len(cands):
            raise ValueError(
                f"group {gid}: len(kinds) must equal len(candidates)={len(cands)}, got {len(kinds)}"
            )
        n_orig = kinds.count(CandidateKind.ORIGINAL)
        if n_orig > 1:
            raise ValueError(f"group {gid}: kinds may hold at most one 'original', got {n_orig}")
        object.__setattr__(self, "kinds", tuple(kinds))

        if self.scores is not None:
            scores = _finite_floats(f"group {gid}: scores", self.scores)
            if len(scores) != len(cands):
                raise ValueError(
                    f"group {gid}: len(scores) must equal len(candidates)={len(cands)}, got {len(scores)}"
                )
            object.__setattr__(self, "scores", scores)

        if self.ref_logps is not None:
            refs = tuple(
                _finite_floats(f"group {gid}: ref_logps[{i}]", r) for i, r in enumerate(self.ref_logps)
            )
            if len(refs) != len(cands):
                raise ValueError(
                    f"group {gid}: len(ref_logps) must equal len(candidates)={len(cands)}, got {len(refs)}"
                )
            for i, (r, c) in enumerate(zip(refs, cands)):
                if len(r) != len(c):
                    raise ValueError(
                        f"group {gid}: len(ref_logps[{i}]) must equal len(candidates[{i}])={len(c)}, "
                        f"got {len(r)}"
                    )
            object.__setattr__(self, "ref_logps", refs)

    @property
    def num_candidates(self) -> int:
        return len(self.candidates)

    @property
    def original_index(self) -> int | None:
        """Index of the ``"original"`` candidate, or ``None`` if the pool has none."""
        return original_index(self.kinds)


@dataclass(frozen=True)
class Selection:
    """Which candidates of one group the RL terms train on.

    ``chosen``/``rejected`` form the DPO pair (both set or both ``None``);
    ``best`` is the reward-filtered NLL target. ``skip_reason`` is set exactly
    when nothing was selected: one of :data:`SKIP_REASONS`. ``fallback``: the
    pool was not judged and ``best`` is its original suffix by the
    ``rf_nll_on_original`` fallback, not by a verdict.
    """

    chosen: int | None
    rejected: int | None
    best: int | None
    skip_reason: str | None = None
    fallback: bool = False
    advantages: tuple[tuple[int, float], ...] = ()
    """``rule="grpo"``: (candidate index, Dr. GRPO advantage) of each of the pool's rollouts."""

    def __post_init__(self) -> None:
        if (self.chosen is None) != (self.rejected is None):
            raise ValueError(
                f"chosen and rejected must both be set or both be None, got chosen={self.chosen}, "
                f"rejected={self.rejected}"
            )
        if self.chosen is not None and self.chosen == self.rejected:
            raise ValueError(f"chosen must differ from rejected, got both = {self.chosen}")
        if self.skip_reason is not None and self.skip_reason not in SKIP_REASONS:
            raise ValueError(f"skip_reason must be None or one of {SKIP_REASONS}, got {self.skip_reason!r}")
        if self.fallback and (self.best is None or self.chosen is not None):
            raise ValueError("a fallback selection holds a best candidate and no DPO pair, got "
                             f"best={self.best}, chosen={self.chosen}")
        if self.advantages and (self.chosen is not None or self.best is not None):
            raise ValueError("a GRPO selection holds advantages only, got chosen/best as well")
        selected = self.chosen is not None or self.best is not None or bool(self.advantages)
        if selected and self.skip_reason is not None:
            raise ValueError(
                f"skip_reason must be None when a candidate is selected, got {self.skip_reason!r}"
            )

    def validate_for(self, group: CandidateGroup) -> None:
        """Raise ``ValueError`` if an index does not exist in ``group``."""
        n = group.num_candidates
        for name in ("chosen", "rejected", "best"):
            idx = getattr(self, name)
            if idx is not None and not 0 <= idx < n:
                raise ValueError(
                    f"group {group.group_id}: selection.{name} must be in [0, {n}), got {idx}"
                )
        for idx, _ in self.advantages:
            if not 0 <= idx < n or group.kinds[idx] != CandidateKind.ROLLOUT:
                raise ValueError(f"group {group.group_id}: a GRPO advantage must belong to a rollout "
                                 f"in [0, {n}), got candidate {idx}")


def rollout_advantages(group: CandidateGroup) -> tuple[tuple[int, float], ...] | str:
    """Dr. GRPO advantages of a judged pool: ``A_i = r_i - mean_j r_j`` over its ROLLOUTS only
    (the policy's samples; the original and the rewrite are not, and stay out of the group and
    of the baseline), without dividing by the std. Returns ``(index, A_i)`` per rollout in pool
    order, or a skip reason: ``"few_rollouts"`` (fewer than 2: no baseline to compare with) or
    ``"all_tied"`` (every rollout reward equal: every advantage 0, nothing to learn)."""
    if group.scores is None:
        return SKIP_UNJUDGED
    idx = [i for i, k in enumerate(group.kinds) if k == CandidateKind.ROLLOUT]
    if len(idx) < 2:
        return SKIP_FEW_ROLLOUTS
    rewards = [group.scores[i] for i in idx]
    if max(rewards) == min(rewards):
        return SKIP_ALL_TIED
    mean = math.fsum(rewards) / len(rewards)
    return tuple((i, r - mean) for i, r in zip(idx, rewards))


def select(group: CandidateGroup, *, rule: str = RULE_DPO, fallback: str = FALLBACK_DROP) -> Selection:
    """Pick the training candidates of ``group`` from its judge scores.

    Tie rule (deterministic, so every rank and every re-run agree):

    * ``best`` / ``chosen`` = the highest score; among equal maxima the
      LOWEST candidate index wins (pool order is the caller's priority order,
      e.g. original before rewrite before rollouts).
    * ``rejected`` = the lowest score; among equal minima the HIGHEST index.
    * If every score is equal (``max == min``) nothing was preferred: no pair
      AND no ``best`` (reward-filtered NLL on an arbitrary candidate would
      just be noise), ``skip_reason = "all_tied"``.
    * A single-candidate pool has nothing to compare against:
      all ``None``, ``skip_reason = "single_candidate"``.
    * ``scores is None``: all ``None``, ``skip_reason = "unjudged"``; with
      ``fallback="rf_nll_on_original"`` and the original in the pool, ``best`` is
      the original instead (``fallback=True``): the RF-NLL term trains the
      document's text while the judge is out.

    ``rule="dpo"`` fills ``chosen``, ``rejected`` and ``best`` (``best ==
    chosen``); ``rule="rf_nll"`` fills only ``best``; ``rule="grpo"`` fills only
    ``advantages`` (:func:`rollout_advantages`; skip reasons as there).
    """
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    if group.scores is None:
        if fallback == FALLBACK_RF_NLL_ON_ORIGINAL and group.original_index is not None:
            return Selection(None, None, group.original_index, fallback=True)
        return Selection(None, None, None, SKIP_UNJUDGED)
    if rule == RULE_GRPO:
        adv = rollout_advantages(group)
        return Selection(None, None, None, adv) if isinstance(adv, str) else Selection(None, None, None, advantages=adv)
    if group.num_candidates == 1:
        return Selection(None, None, None, SKIP_SINGLE_CANDIDATE)
    scores = group.scores
    hi, lo = max(scores), min(scores)
    if hi == lo:
        return Selection(None, None, None, SKIP_ALL_TIED)
    best = scores.index(hi)  # index() returns the first, i.e. lowest, maximum
    if rule == RULE_RF_NLL:
        return Selection(None, None, best)
    worst = len(scores) - 1 - scores[::-1].index(lo)  # last (highest-index) minimum
    return Selection(best, worst, best)


@dataclass(frozen=True)
class SelectionStats:
    """Counters over one step's selections, for logging.

    Attributes:
        num_groups: groups seen.
        num_pairs: selections with a DPO pair.
        num_best: selections with an rf-NLL target chosen by a verdict.
        num_fallback: unjudged groups whose original is the rf-NLL target by
            the ``rf_nll_on_original`` fallback (also counted as skipped "unjudged").
        skipped: count per skip reason (only reasons that occurred).
        chosen_kinds / best_kinds: count per candidate kind of the chosen /
            best candidate.
        rollout_chosen_rate: fraction of selections with a ``chosen`` whose
            chosen candidate is a ``"rollout"``; ``None`` if none had one
            (e.g. all rf_nll or all skipped) -- 0.0 would read as a signal.
        rollout_best_rate: the same over ``best``.
        num_targets / rollout_targets: selections with a candidate the update moves towards (the
            ``chosen``, else the ``best``), and how many of those are rollouts: the trainer's
            logged ``rollout_chosen_rate`` metric is their ratio (rlpt_plugin/megatron/step/step_source.py).
        num_grpo_groups: selections with GRPO advantages (rule "grpo").
    """

    num_groups: int
    num_pairs: int
    num_best: int
    num_fallback: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    chosen_kinds: dict[str, int] = field(default_factory=dict)
    best_kinds: dict[str, int] = field(default_factory=dict)
    rollout_chosen_rate: float | None = None
    rollout_best_rate: float | None = None
    num_targets: int = 0
    rollout_targets: int = 0
    num_grpo_groups: int = 0

    @classmethod
    def from_selections(cls, items: Iterable[tuple[CandidateGroup, Selection]]) -> SelectionStats:
        """Aggregate ``(group, selection)`` pairs; validates each selection's indices."""
        n = 0
        skipped: Counter[str] = Counter()
        chosen_kinds: Counter[str] = Counter()
        best_kinds: Counter[str] = Counter()
        num_fallback = num_grpo = num_targets = rollout_targets = 0
        for group, sel in items:
            sel.validate_for(group)
            n += 1
            num_grpo += bool(sel.advantages)
            if sel.fallback:
                num_fallback += 1
                skipped[SKIP_UNJUDGED] += 1
                continue
            if sel.skip_reason is not None:
                skipped[sel.skip_reason] += 1
            if sel.chosen is not None:
                chosen_kinds[group.kinds[sel.chosen].value] += 1
            if sel.best is not None:
                best_kinds[group.kinds[sel.best].value] += 1
            target = sel.chosen if sel.chosen is not None else sel.best
            if target is not None:
                num_targets += 1
                rollout_targets += group.kinds[target] == CandidateKind.ROLLOUT
        num_pairs = sum(chosen_kinds.values())
        num_best = sum(best_kinds.values())
        rollout = CandidateKind.ROLLOUT.value
        return cls(
            num_groups=n,
            num_pairs=num_pairs,
            num_best=num_best,
            num_fallback=num_fallback,
            skipped=dict(skipped),
            chosen_kinds=dict(chosen_kinds),
            best_kinds=dict(best_kinds),
            rollout_chosen_rate=chosen_kinds[rollout] / num_pairs if num_pairs else None,
            rollout_best_rate=best_kinds[rollout] / num_best if num_best else None,
            num_targets=num_targets,
            rollout_targets=rollout_targets,
            num_grpo_groups=num_grpo,
        )


def select_all(groups: Sequence[CandidateGroup], *, rule: str = RULE_DPO,
               fallback: str = FALLBACK_DROP) -> list[Selection]:
    """:func:`select` applied to every group, in order."""
    return [select(g, rule=rule, fallback=fallback) for g in groups]
