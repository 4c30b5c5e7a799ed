"""The world's oracle teacher behind the protocols the LLM teacher uses.

* :class:`OracleRewriter`: same contract as :class:`rlpt_plugin.teacher.rewriter.Rewriter`
  (``rlpt rewrite --teacher world``): each window's suffix is rewritten by
  :func:`~rlpt_plugin.world.oracle.oracle_rewrite`, re-encoded and cut to ``suffix_length``;
  "copied" when that equals the original suffix tokens, else "rewritten".
* :class:`OracleJudge`: the candidate stage's ``PoolJudge`` protocol (``rlpt.judge.backend:
  world``): quality through the same pairing schedules as the LLM judge with
  :func:`~rlpt_plugin.world.oracle.quality_prefers` as the comparator, safety and factuality
  pointwise (the reference is the pool's original suffix), reward = weighted sum of the axes.

Both are local: no requests, no cache, no failures. Built with their arguments' defaults they
are the exact oracle. The entry points (``rlpt.judge.*`` for the judge, ``rlpt rewrite --teacher
world`` for the rewriter, ``rlpt demo``) default instead to an HONEST teacher, one that differs
from the grader (``rlpt_plugin/world/evaluate.py``, always exact) the way an LLM teacher differs
from the truth; the defaults and their reasons:

* :data:`DEFAULT_JUDGE_NOISE` = 0.1: a tenth of the judgments flipped (pairwise quality: the
  winner swapped, a tie stays a tie; safety: the label swapped; factuality: re-drawn among the
  other two labels). Strong LLM judges agree with careful human labels on roughly 80-90% of
  pairwise comparisons; 0.1 is the optimistic end, and ``--judge-noise`` up to 0.2 is covered.
* :data:`~rlpt_plugin.world.knowledge.DEFAULT_KNOWLEDGE` = 0.8: the teacher knows four facts in
  five; on the others it trusts the reference (see :mod:`rlpt_plugin.world.knowledge`).
* :data:`DEFAULT_REWRITE_MISS` = 0.1: the rewriter leaves one defective sentence in ten as it
  is (rewriters copy too eagerly; the paper's plain instruct model even refused unsafe text).
* :data:`DEFAULT_REWRITE_ERROR` = 0.02: each value the rewrite writes is replaced by a wrong one
  with probability 0.02 (a rewriter sometimes introduces an error of its own).

The judge's noise is stateless and reproducible (a hash of ``seed`` and the judgment's inputs);
the pairing schedule's seed is derived from the pool's content, so the same pool always gets
the same verdicts. The rewriter's misses and errors are seeded by its ``seed`` (the world's).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from rlpt_plugin.judge.axes import Axis, combine, parse_axis
from rlpt_plugin.judge.pools import JudgePool, Verdicts
from rlpt_plugin.judge.schedules import PIVOT, SCHEDULES, drive, make_schedule
from rlpt_plugin.teacher.rewriter import RewriteInput, RewriteOutput, check_batch, classify_text
from rlpt_plugin.types import Tokenizer
from rlpt_plugin.world.kb import KnowledgeBase
from rlpt_plugin.world.knowledge import DEFAULT_KNOWLEDGE, teacher_view
from rlpt_plugin.world.oracle import factuality, oracle_rewrite, quality_outcome, safety, similarity

MODEL_ID = "world-oracle"
TEMPLATE_VERSION = "world_oracle_v1"
DEFAULT_JUDGE_NOISE = 0.1
DEFAULT_REWRITE_MISS = 0.1
DEFAULT_REWRITE_ERROR = 0.02
__all__ = ["DEFAULT_JUDGE_NOISE", "DEFAULT_KNOWLEDGE", "DEFAULT_REWRITE_ERROR", "DEFAULT_REWRITE_MISS",
           "OracleJudge", "OracleRewriter"]


def _rate(name: str, value: float, *, open_top: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not (0.0 <= value < 1.0 if open_top else 0.0 <= value <= 1.0):
        raise ValueError(f"{name} must be in {'[0, 1)' if open_top else '[0, 1]'}, got {value!r}")
    return float(value)


class OracleRewriter:
    """Rewrites windows with the world's teacher; outputs follow the Rewriter's contract.

    ``knowledge``: share of the facts the teacher knows (seeded by ``seed``, the world's seed);
    ``miss_rate`` / ``error_rate``: see :func:`~rlpt_plugin.world.oracle.oracle_rewrite`.
    The defaults (1, 0, 0) are the exact oracle."""

    model_id = MODEL_ID
    template_version = TEMPLATE_VERSION

    def __init__(self, kb: KnowledgeBase, tokenizer: Tokenizer, suffix_length: int, *,
                 knowledge: float = 1.0, miss_rate: float = 0.0, error_rate: float = 0.0,
                 seed: int = 0) -> None:
        if isinstance(suffix_length, bool) or not isinstance(suffix_length, int) or suffix_length < 1:
            raise ValueError(f"suffix_length must be an int >= 1, got {suffix_length!r}")
        if not isinstance(kb, KnowledgeBase):
            raise ValueError(f"kb must be a KnowledgeBase, got {type(kb).__name__}")
        self.kb = teacher_view(kb, _rate("knowledge", knowledge), seed)
        self.tokenizer = tokenizer
        self.suffix_length = suffix_length
        self.miss_rate, self.error_rate = _rate("miss_rate", miss_rate), _rate("error_rate", error_rate)
        self.seed = seed

    async def rewrite(self, items: Sequence[RewriteInput]) -> list[RewriteOutput]:
        """Rewrite every window; outputs in input order, one per input."""
        check_batch(items)
        return [classify_text(item, oracle_rewrite(item.prefix_text, item.suffix_text, self.kb,
                                                   miss_rate=self.miss_rate, error_rate=self.error_rate,
                                                   seed=self.seed),
                              self.tokenizer, self.suffix_length) for item in items]


def _pool_seed(seed: int, prefix: str, reference: str | None, candidates: Sequence[str]) -> int:
    parts = [str(seed), prefix, "" if reference is None else "\x00" + reference, *candidates]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big")


class OracleJudge:
    """Implements the candidate stage's ``PoolJudge`` protocol with the world's oracle.

    ``axes``: the enabled axes (safety / factuality / quality / similarity); ``weights``: axis -> weight
    (an entry per enabled axis); ``schedule``: quality pairing (round_robin / pivot /
    tournament; pivot uses the pool's original suffix when it has one); ``noise_rate``: the
    probability that a single judgment is flipped (the oracle's reproducible noise);
    ``seed``: seeds the noise and the schedules; ``knowledge``: share of the facts the judge
    knows, seeded by ``knowledge_seed`` (the world's seed: the rewriter of the same world
    knows the same facts). Quality ties score 0.5 for both candidates. The defaults (no noise,
    full knowledge) are the exact oracle.
    """

    def __init__(self, kb: KnowledgeBase, *, axes: Sequence[str], weights: Mapping[str, float],
                 schedule: str = "round_robin", noise_rate: float = 0.0, seed: int = 0,
                 knowledge: float = 1.0, knowledge_seed: int = 0) -> None:
        if not isinstance(kb, KnowledgeBase):
            raise ValueError(f"kb must be a KnowledgeBase, got {type(kb).__name__}")
        parsed = tuple(parse_axis(a) for a in axes)
        if not parsed:
            raise ValueError("axes must name at least one axis, got none")
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"axes must be distinct, got {[a.value for a in parsed]}")
        norm_w = {parse_axis(k): float(v) for k, v in weights.items()}
        missing = [a.value for a in parsed if a not in norm_w]
        if missing:
            raise ValueError(f"weights must have an entry for every axis, missing {missing}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
        if isinstance(noise_rate, bool) or not isinstance(noise_rate, (int, float)) \
                or not 0.0 <= noise_rate < 1.0:
            raise ValueError(f"noise_rate must be in [0, 1), got {noise_rate!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int, got {seed!r}")
        self.kb = teacher_view(kb, _rate("knowledge", knowledge), knowledge_seed)
        self.knowledge = float(knowledge)
        self.axes: tuple[str, ...] = tuple(a.value for a in parsed)
        self.weights = {a.value: norm_w[a] for a in parsed}
        self.schedule = schedule
        self.noise_rate = float(noise_rate)
        self.seed = seed
        self.model_id = MODEL_ID

    async def judge(self, pools: Sequence[Any]) -> Any:
        """Verdicts for the pools, in order (see ``rlpt_plugin.megatron.candidates.candidate_stage``)."""
        scores, per_axis, calls = self.judge_sync(pools)
        return Verdicts(scores=list(scores), per_axis=per_axis, calls=calls,
                        failures=[0] * len(pools), cache_hit_rate=0.0)

    def judge_sync(self, pools: Sequence[Any]) -> tuple[list[list[float]], list[dict[str, list[float]]], list[int]]:
        """(reward per candidate, axis -> scores, judgments made) per pool, without Verdicts."""
        scores, per_axis, calls = [], [], []
        for pool in pools:
            p = JudgePool.coerce(pool)
            axis_scores, n_calls = self._pool(p)
            per_axis.append(axis_scores)
            calls.append(n_calls)
            scores.append(combine(axis_scores, self.weights))
        return scores, per_axis, calls

    def _pool(self, pool: JudgePool) -> tuple[dict[str, list[float]], int]:
        cands, prefix = pool.candidates, pool.prefix
        reference = pool.reference if pool.reference is not None else ""
        noise = {"noise_rate": self.noise_rate, "seed": self.seed}
        out: dict[str, list[float]] = {}
        n_calls = 0
        for axis in self.axes:
            if axis == Axis.SAFETY:
                out[axis] = [float(safety(c, **noise)) for c in cands]
                n_calls += len(cands)
            elif axis == Axis.FACTUALITY:
                out[axis] = [factuality(prefix, reference, c, self.kb, **noise) for c in cands]
                n_calls += len(cands)
            elif axis == Axis.SIMILARITY:
                out[axis] = [float(similarity(prefix, reference, c, **noise)) for c in cands]
                n_calls += len(cands)
            else:
                pivot = pool.original_index if self.schedule == PIVOT else None
                sched = make_schedule(self.schedule, len(cands), pivot=pivot,
                                      seed=_pool_seed(self.seed, prefix, pool.reference, cands))

                def compare(i: int, j: int) -> float:
                    return quality_outcome(prefix, cands[i], cands[j], self.kb, **noise)

                out[axis] = drive(sched, compare)
                n_calls += sched.comparisons
        return out, n_calls
