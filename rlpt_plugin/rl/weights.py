"""Schedules for the loss-term weights over optimizer steps.

A schedule holds ``start`` up to ``begin_step``, moves to ``end`` between
``begin_step`` and ``end_step`` (linearly or along half a cosine), and holds
``end`` afterwards. ``MixedWeights`` bundles one schedule per term of
``rlpt_plugin.rl.losses.mixed_loss`` and turns a step into ``LossWeights``.
No tensors here: weights are python floats, evaluated once per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rlpt_plugin.rl.losses import LossWeights

_KINDS = ("constant", "linear", "cosine")


def _is_int(value: object) -> bool:
    # bool is an int subclass, but True as a step is always a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_weight(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= 0)


@dataclass(frozen=True, kw_only=True)
class WeightSchedule:
    """Weight of one loss term as a function of the optimizer step.

    kind: "constant" (always ``start``), "linear" or "cosine" (``start`` -> ``end``
        between ``begin_step`` and ``end_step``).
    start: weight at and before ``begin_step``; finite and >= 0.
    end: weight at and after ``end_step``; required for linear/cosine, must be
        None for constant (a constant with an ``end`` is ambiguous).
    begin_step, end_step: ints >= 0, ``end_step > begin_step`` for linear/cosine.
    """

    kind: str = "constant"
    start: float
    end: float | None = None
    begin_step: int = 0
    end_step: int = 0

    def __post_init__(self) -> None:
        # Collect every problem so a bad config is fixed in one round trip.
        errors: list[str] = []
        if self.kind not in _KINDS:
            errors.append(f"`kind` must be one of {_KINDS}, but is {self.kind!r} instead.")
        if not _is_weight(self.start):
            errors.append(f"`start` must be a finite number >= 0, but is {self.start!r} instead.")
        ramped = self.kind in ("linear", "cosine")
        if ramped and self.end is None:
            errors.append(f"`end` must be set for kind {self.kind!r}, but is None instead.")
        elif self.kind == "constant" and self.end is not None:
            errors.append(f"`end` must be None for kind 'constant', but is {self.end!r} instead.")
        elif self.end is not None and not _is_weight(self.end):
            errors.append(f"`end` must be a finite number >= 0, but is {self.end!r} instead.")
        steps_ok = True
        for name in ("begin_step", "end_step"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 0):
                steps_ok = False
                errors.append(f"`{name}` must be an int >= 0, but is {value!r} instead.")
        if ramped and steps_ok and self.end_step <= self.begin_step:
            errors.append(f"`end_step` must be > begin_step ({self.begin_step}) for kind "
                          f"{self.kind!r}, but is {self.end_step} instead.")
        if errors:
            raise ValueError("Invalid WeightSchedule:\n  " + "\n  ".join(errors))

    def value(self, step: int) -> float:
        """Weight at optimizer step ``step`` (an int >= 0)."""
        if not (_is_int(step) and step >= 0):
            raise ValueError(f"step must be an int >= 0, but got {step!r}")
        if self.kind == "constant":
            return float(self.start)
        assert self.end is not None  # guaranteed by __post_init__
        if step <= self.begin_step:
            return float(self.start)
        if step >= self.end_step:
            return float(self.end)
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        if self.kind == "linear":
            fraction_done = progress
        else:
            # Half a cosine: flat at both ends, fastest change in the middle.
            fraction_done = 0.5 * (1.0 - math.cos(math.pi * progress))
        return float(self.start + (self.end - self.start) * fraction_done)


@dataclass(frozen=True)
class MixedWeights:
    """One WeightSchedule per mixed_loss term: lm, dpo, rf_nll, grpo (default 0 throughout)."""

    lm: WeightSchedule
    dpo: WeightSchedule
    rf_nll: WeightSchedule
    grpo: WeightSchedule = field(default_factory=lambda: WeightSchedule(start=0.0))

    def __post_init__(self) -> None:
        errors = [f"`{name}` must be a WeightSchedule, but is {type(value).__name__} instead."
                  for name, value in (("lm", self.lm), ("dpo", self.dpo), ("rf_nll", self.rf_nll),
                                              ("grpo", self.grpo))
                  if not isinstance(value, WeightSchedule)]
        if errors:
            raise ValueError("Invalid MixedWeights:\n  " + "\n  ".join(errors))

    @classmethod
    def constant(cls, lm: float = 1.0, dpo: float = 1.0, rf_nll: float = 0.0, grpo: float = 0.0) -> MixedWeights:
        """Fixed weights for every step."""
        return cls(lm=WeightSchedule(start=lm), dpo=WeightSchedule(start=dpo),
                   rf_nll=WeightSchedule(start=rf_nll), grpo=WeightSchedule(start=grpo))

    def at(self, step: int) -> LossWeights:
        """LossWeights for optimizer step ``step``."""
        return LossWeights(lm=self.lm.value(step), dpo=self.dpo.value(step),
                           rf_nll=self.rf_nll.value(step), grpo=self.grpo.value(step))
