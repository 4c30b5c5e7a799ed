"""What the judge takes and gives: :class:`JudgeConfig` (how to judge), :class:`JudgePool` (one
prefix and its candidate texts), :class:`PoolVerdict` (its scores), :class:`Verdicts` (a batch's
scores as the candidate stage's ``PoolJudge`` protocol returns them); the judge itself is
:mod:`rlpt_plugin.judge.judge`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rlpt_plugin.judge.axes import AXES, DEFAULT_TEMPLATES, Axis, parse_axis
from rlpt_plugin.judge.schedules import SCHEDULES
from rlpt_plugin.judge.structured import MODES
from rlpt_plugin.rl.pool import FALLBACK_DROP, FALLBACK_RF_NLL_ON_ORIGINAL, FALLBACKS, CandidateKind, original_index
from rlpt_plugin.teacher.protocol import SamplingParams

#: Failed judge attempts by reason, the keys of :attr:`Verdicts.reasons`, logged per step as
#: judge_<reason>: HTTP attempts the client retried (5xx, timeouts, resets, bad JSON: absorbed by
#: retries and failover), judgments whose HTTP attempts all failed, and answers the strict parser
#: rejected (each retried with a fresh seed).
FAILURE_REASONS = ("client_retries", "http_failures", "parse_failures")
POSITIONS: tuple[str, ...] = ("random", "both")

# The placeholders each axis fills; a template for the axis must declare exactly these.
AXIS_PLACEHOLDERS: dict[Axis, frozenset[str]] = {
    Axis.SAFETY: frozenset({"candidate"}),
    Axis.FACTUALITY: frozenset({"prefix", "reference", "candidate"}),
    Axis.QUALITY: frozenset({"prefix", "candidate_a", "candidate_b"}),
    Axis.SIMILARITY: frozenset({"prefix", "reference", "candidate"}),
}


@dataclass(frozen=True)
class JudgeConfig:
    """How to judge. Defaults: quality only, round robin (the paper), one greedy sample.

    ``weights`` needs an entry for every enabled axis. The paper's small-judge setting is
    ``samples_per_judgment=5, params=SamplingParams(temperature=1.0, top_p=0.6, ...)``.
    """

    axes: tuple[str, ...] = (Axis.QUALITY,)
    weights: Mapping[str, float] = field(default_factory=lambda: {a: 1.0 for a in AXES})
    schedule: str = "round_robin"
    position: str = "random"
    samples_per_judgment: int = 1
    params: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=512)
    max_attempts: int = 3
    retry_temperature: float | None = 0.7
    fallback: str = FALLBACK_DROP
    seed: int = 0
    templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    template_dir: str | None = None
    structured_output: str = "off"


    def __post_init__(self) -> None:
        if isinstance(self.axes, str):
            raise ValueError(f"axes must be a sequence of axis names, got the string {self.axes!r}")
        axes = tuple(parse_axis(a) for a in self.axes)
        if not axes or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be non-empty and without repeats, got {list(self.axes)}")
        weights = {parse_axis(k): float(v) for k, v in self.weights.items()}
        for a in axes:
            if a not in weights or not math.isfinite(weights[a]):
                raise ValueError(f"weights must give a finite weight for axis {a.value!r}, got {dict(self.weights)}")
        templates = {parse_axis(k): v for k, v in self.templates.items()}
        for a in axes:
            if a not in templates:
                raise ValueError(f"templates must name a template for axis {a.value!r}, got {dict(self.templates)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {list(POSITIONS)}, got {self.position!r}")
        for name in ("samples_per_judgment", "max_attempts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(self.params).__name__}")
        if self.retry_temperature is not None and not (0.0 <= float(self.retry_temperature) < math.inf):
            raise ValueError(f"retry_temperature must be None or a finite float >= 0, got {self.retry_temperature!r}")
        if self.structured_output not in MODES:
            raise ValueError(f"structured_output must be one of {list(MODES)}, got {self.structured_output!r}")
        if self.params.structured is not None:
            raise ValueError("params.structured must be None: the judge sets each axis's format from "
                             "structured_output")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {self.fallback!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "templates", templates)


@dataclass(frozen=True)
class JudgePool:
    """One prefix and its candidate texts; ``reference`` is the original suffix (or None)."""

    prefix: str
    reference: str | None
    candidates: tuple[str, ...]
    kinds: tuple[CandidateKind, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise ValueError(f"prefix must be a string, got {type(self.prefix).__name__}")
        if self.reference is not None and not isinstance(self.reference, str):
            raise ValueError(f"reference must be a string or None, got {type(self.reference).__name__}")
        if isinstance(self.candidates, str):
            raise ValueError("candidates must be a sequence of strings, got a string")
        cands = tuple(self.candidates)
        if not cands:
            raise ValueError("candidates must be non-empty, got 0 candidates")
        for i, c in enumerate(cands):
            if not isinstance(c, str):
                raise ValueError(f"candidates[{i}] must be a string, got {type(c).__name__}")
        kinds = tuple(CandidateKind(k) for k in self.kinds)
        if len(kinds) != len(cands):
            raise ValueError(f"len(kinds) must equal len(candidates)={len(cands)}, got {len(kinds)}")
        if kinds.count(CandidateKind.ORIGINAL) > 1:
            raise ValueError(f"kinds may hold at most one 'original', got {kinds.count(CandidateKind.ORIGINAL)}")
        object.__setattr__(self, "candidates", cands)
        object.__setattr__(self, "kinds", kinds)

    @classmethod
    def coerce(cls, value: JudgePool | Sequence[Any]) -> JudgePool:
        """A JudgePool as is, or one built from a 4-tuple ``(prefix, reference, candidates, kinds)``."""
        if isinstance(value, JudgePool):
            return value
        if isinstance(value, str) or len(value) != 4:
            raise ValueError("a pool must be a JudgePool or (prefix, reference, candidates, kinds)")
        return cls(value[0], value[1], tuple(value[2]), tuple(value[3]))

    @property
    def original_index(self) -> int | None:
        return original_index(self.kinds)


@dataclass(frozen=True)
class PoolVerdict:
    """The judge's verdict on one pool.

    ``scores``: reward per candidate (None when the pool failed). ``per_axis``: axis -> score
    per candidate, for the axes that succeeded. ``calls``: judge requests for this pool
    (retries and cache hits included). ``failures``: attempts that failed (HTTP or parse).
    ``comparisons``: quality comparisons decided by the schedule. ``errors``: why each failed
    judgment failed (its last error). ``reasons``: failed attempts by reason:
    ``client_retries`` (HTTP attempts the client retried: 5xx, timeouts, resets, bad JSON),
    ``http_failures`` (requests whose every HTTP attempt failed), ``parse_failures`` (answers
    the strict parser rejected).
    """

    scores: list[float] | None
    per_axis: dict[Axis, list[float]]
    failed: bool
    fallback: str | None
    calls: int
    failures: int
    comparisons: int = 0
    errors: tuple[str, ...] = ()
    reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass
class Verdicts:
    """A judge's answer for a batch of pools.

    ``scores[g]``: reward per candidate of pool g, None when it could not be judged;
    ``per_axis[g]``: axis -> score per candidate (empty when unavailable); ``calls`` and
    ``failures``: judge requests and failed attempts per pool; ``cache_hit_rate``: of the whole
    run so far (cumulative; logged as ``judge_cache_hit_rate_so_far``);
    ``errors[g]``: why pool g's failed judgments failed (with the judge's answer where it
    could not be parsed).
    """

    scores: list[list[float] | None]
    per_axis: list[dict[str, list[float]]] = field(default_factory=list)
    calls: list[int] = field(default_factory=list)
    failures: list[int] = field(default_factory=list)
    cache_hit_rate: float = 0.0
    errors: list[tuple[str, ...]] = field(default_factory=list)
    reasons: dict[str, float] = field(default_factory=dict)
    """Failed attempts of this batch by reason (keys of :data:`FAILURE_REASONS`)."""
