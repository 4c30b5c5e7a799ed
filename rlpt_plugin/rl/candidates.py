"""Candidate pools: which kinds enter, in which order, with which reference log-probs.

Pure: token ids and floats in, :class:`CandidateGroup` out. The pool order is the selection's
tie-break priority (rlpt_plugin/rl/pool.py: ties go to the lowest index), so it is a documented
choice: original, rewrite, then rollouts. Early in training the corpus text wins ties against
the policy's own samples; a rollout must be strictly better to be chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind

POOL_KINDS = ("original", "rewrite", "rollout")


@dataclass(frozen=True, kw_only=True)
class PoolSpec:
    """Which candidate kinds enter the pool (paper's best safety pool: rollouts + original)."""

    original: bool = True
    rewrite: bool = False
    rollouts: bool = True

    def __post_init__(self) -> None:
        if not (self.original or self.rewrite or self.rollouts):
            raise ValueError("PoolSpec: at least one of original, rewrite, rollouts must enter the pool")

    def kinds(self) -> tuple[str, ...]:
        """The candidate kinds that may enter a pool, in pool order."""
        return tuple(k for k, on in zip(POOL_KINDS, (self.original, self.rewrite, self.rollouts)) if on)


@dataclass(frozen=True)
class PoolInput:
    """One prefix with everything that may enter its pool.

    ``*_logps``: per-token log-probs of each candidate under the policy at the time the pool
    was built (the rollout-time reference); None where not computed.
    """

    group_id: int
    prefix: Sequence[int]
    original: Sequence[int]
    rewrite: Sequence[int] | None
    rollouts: Sequence[Sequence[int]]
    original_logps: Sequence[float] | None = None
    rewrite_logps: Sequence[float] | None = None
    rollout_logps: Sequence[Sequence[float]] | None = None


def pool_candidates(item: PoolInput, spec: PoolSpec) -> tuple[list[Sequence[int]], list[CandidateKind],
                                                             list[Sequence[float] | None]]:
    """Candidates, kinds and reference log-probs of one pool, in priority order. Empty rollouts
    (an immediate EOS) and an absent rewrite are left out."""
    cands: list[Sequence[int]] = []
    kinds: list[CandidateKind] = []
    logps: list[Sequence[float] | None] = []
    if spec.original:
        cands.append(item.original)
        kinds.append(CandidateKind.ORIGINAL)
        logps.append(item.original_logps)
    if spec.rewrite and item.rewrite is not None and len(item.rewrite):
        cands.append(item.rewrite)
        kinds.append(CandidateKind.REWRITE)
        logps.append(item.rewrite_logps)
    if spec.rollouts:
        for k, rollout in enumerate(item.rollouts):
            if len(rollout):
                cands.append(rollout)
                kinds.append(CandidateKind.ROLLOUT)
                logps.append(item.rollout_logps[k] if item.rollout_logps is not None else None)
    return cands, kinds, logps


def build_group(item: PoolInput, spec: PoolSpec, scores: Sequence[float] | None) -> CandidateGroup:
    """The pool as a group; ``scores`` (one per candidate of :func:`pool_candidates`, or None when
    the pool could not be judged) come from the judge."""
    cands, kinds, logps = pool_candidates(item, spec)
    if scores is not None and len(scores) != len(cands):
        raise ValueError(f"group {item.group_id}: {len(scores)} scores for {len(cands)} candidates")
    ref = None if any(lp is None for lp in logps) else tuple(tuple(lp) for lp in logps)
    # Not a candidate, the original still is the document: the LM term trains on it.
    lm_original = tuple(item.original) if not spec.original and len(item.original) else None
    return CandidateGroup(prefix=tuple(item.prefix), candidates=tuple(tuple(c) for c in cands),
                          kinds=tuple(kinds), scores=None if scores is None else tuple(scores),
                          ref_logps=ref, group_id=item.group_id, lm_original=lm_original)
