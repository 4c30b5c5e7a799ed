"""Judging axes, their verdict types and the rule that turns a verdict into a score.

Four axes (docs/METHOD.md, "The loop", step 3; similarity: "Thinking mid-training"):

* ``safety``: pointwise, the judge sees the candidate alone -> :class:`SafetyVerdict`;
  safe = 1.0, unsafe = 0.0.
* ``factuality``: pointwise with reference, the judge sees the prefix, the original suffix as
  ground truth and the candidate -> :class:`Hallucination`; none = 1.0, possible = 0.5,
  definite = 0.0.
* ``similarity``: pointwise with reference, the judge sees the prefix, the original suffix and a
  predicted suffix (a thinking rollout's answer, its thought removed) -> :class:`SameContent`;
  same content = 1.0, else 0.0 (the binary reward of RL mid-training).
* ``quality``: pairwise, the judge sees the prefix and two candidates and must pick one ->
  :class:`Winner`; a candidate's score comes from a pairing schedule
  (:mod:`rlpt_plugin.judge.schedules`), always in [0, 1].

With ``samples_per_judgment > 1`` an axis score is the mean of the per-sample scores. The reward
of a candidate is ``sum(weight[axis] * score[axis])`` over the enabled axes (:func:`combine`).
Everything here is pure Python.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence


class Axis(enum.StrEnum):
    """What a judgment is about."""

    SAFETY = "safety"
    FACTUALITY = "factuality"
    QUALITY = "quality"
    SIMILARITY = "similarity"


AXES: tuple[Axis, ...] = (Axis.SAFETY, Axis.FACTUALITY, Axis.QUALITY, Axis.SIMILARITY)
POINTWISE: frozenset[Axis] = frozenset({Axis.SAFETY, Axis.FACTUALITY, Axis.SIMILARITY})
#: Pointwise axes that compare the candidate with the reference (the original suffix).
WITH_REFERENCE: frozenset[Axis] = frozenset({Axis.FACTUALITY, Axis.SIMILARITY})
PAIRWISE: frozenset[Axis] = frozenset({Axis.QUALITY})

# The packaged template per axis (rlpt_plugin/teacher/prompts/<name>.txt).
DEFAULT_TEMPLATES: dict[Axis, str] = {
    Axis.SAFETY: "judge_safety_v1",
    Axis.FACTUALITY: "judge_factuality_v1",
    Axis.QUALITY: "judge_quality_v1",
    Axis.SIMILARITY: "judge_similarity_v1",
}


class SafetyVerdict(enum.StrEnum):
    """Final decision of a safety judgment."""

    SAFE = "safe"
    UNSAFE = "unsafe"

    @property
    def score(self) -> float:
        return 1.0 if self is SafetyVerdict.SAFE else 0.0


class Hallucination(enum.StrEnum):
    """Label of a factuality judgment."""

    NONE = "none"
    POSSIBLE = "possible"
    DEFINITE = "definite"

    @property
    def score(self) -> float:
        return {Hallucination.NONE: 1.0, Hallucination.POSSIBLE: 0.5, Hallucination.DEFINITE: 0.0}[self]


class SameContent(enum.StrEnum):
    """Label of a similarity judgment: does the candidate say what the reference says?"""

    YES = "yes"
    NO = "no"

    @property
    def score(self) -> float:
        return 1.0 if self is SameContent.YES else 0.0


class Winner(enum.StrEnum):
    """Which of the two shown candidates won a pairwise quality judgment (as shown, A first)."""

    A = "A"
    B = "B"


def parse_axis(value: str | Axis) -> Axis:
    """``value`` as an :class:`Axis`, or a ValueError listing the allowed names."""
    try:
        return Axis(value)
    except ValueError:
        raise ValueError(f"axis must be one of {[a.value for a in AXES]}, got {value!r}") from None


def mean(values: Sequence[float]) -> float:
    """Plain mean; a ValueError on an empty sequence (a judgment with no samples is a bug)."""
    if not values:
        raise ValueError("values must be non-empty to average, got 0 values")
    return math.fsum(values) / len(values)


def combine(per_axis: Mapping[Axis | str, Sequence[float]], weights: Mapping[Axis | str, float]) -> list[float]:
    """Reward per candidate: ``sum over axes in per_axis of weights[axis] * per_axis[axis][i]``.

    Every axis in ``per_axis`` must have a weight and the same number of candidates.
    """
    if not per_axis:
        raise ValueError("per_axis must hold at least one axis, got none")
    norm_w = {parse_axis(k): float(v) for k, v in weights.items()}
    lengths = {parse_axis(a): len(s) for a, s in per_axis.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"per_axis lists must have equal lengths, got {dict(lengths)}")
    n = next(iter(lengths.values()))
    out = [0.0] * n
    for axis, scores in per_axis.items():
        ax = parse_axis(axis)
        if ax not in norm_w:
            raise ValueError(f"weights must have an entry for axis {ax.value!r}, got {sorted(w.value for w in norm_w)}")
        for i, s in enumerate(scores):
            out[i] += norm_w[ax] * float(s)
    return out
