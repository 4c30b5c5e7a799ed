"""The ``rlpt`` config section: typed, documented, validated with every error reported at once.

Attached to a Megatron-Bridge ``ConfigContainer`` (see rlpt_plugin/megatron/bridge_host.py) and
overridable with Bridge's Hydra syntax, e.g. ``rlpt.loss.beta=0.05 rlpt.loss.dpo.start=0.5``.
No megatron imports: the cross-checks against the host config live in the host adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.pool import RULES
from rlpt_plugin.rl.weights import MixedWeights, WeightSchedule

REFERENCE_MODES = ("rollout", "frozen", "none")
SOURCES = ("synthetic",)


class ConfigError(ValueError):
    """Every problem found in a config, one per line, each naming field, constraint and value."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid rlpt configuration:\n  - " + "\n  - ".join(self.errors))


def _number(errors: list[str], path: str, value: Any, *, minimum: float | None = None,
            strictly: bool = False, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        errors.append(f"`{path}` must be a finite {'integer' if integer else 'number'}, "
                      f"but is {value!r} instead.")
        return
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        errors.append(f"`{path}` must be {'>' if strictly else '>='} {minimum}, but is {value!r} instead.")


def _choice(errors: list[str], path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"`{path}` must be one of {', '.join(choices)}, but is {value!r} instead.")


@dataclass(kw_only=True)
class TermWeight:
    """The weight of one loss term over training steps."""

    start: float = 1.0
    """Weight at and before ``begin_step`` (the whole run when ``kind`` is constant)."""
    end: float | None = None
    """Weight at and after ``end_step`` (linear and cosine only)."""
    kind: str = "constant"
    """constant | linear | cosine."""
    begin_step: int = 0
    """First step of the ramp."""
    end_step: int = 0
    """Last step of the ramp (> begin_step for linear and cosine)."""

    def validate(self, path: str) -> list[str]:
        try:
            self.build()
        except ValueError as err:
            return [f"`{path}`: {err}"]
        return []

    def build(self) -> WeightSchedule:
        return WeightSchedule(kind=self.kind, start=self.start, end=self.end,
                              begin_step=self.begin_step, end_step=self.end_step)


@dataclass(kw_only=True)
class LossSection:
    """The mixed loss: weight * term, each term normalised by its own global count."""

    lm: TermWeight = field(default_factory=lambda: TermWeight(start=1.0))
    """Next-token NLL on the original text (prefix + original suffix), per token."""
    dpo: TermWeight = field(default_factory=lambda: TermWeight(start=1.0))
    """Online DPO on (best, worst) candidates, per pair."""
    rf_nll: TermWeight = field(default_factory=lambda: TermWeight(start=0.0))
    """Reward-filtered NLL on the best candidate's tokens, per token."""
    beta: float = 0.1
    """DPO temperature (> 0). The paper leaves it open; 0.1 is common for online DPO."""
    dpo_reduction: str = "sum"
    """sum | mean: a candidate's sequence log-prob is the sum (default) or mean of its tokens."""
    reference: str = "rollout"
    """rollout (default) | frozen | none. rollout: the policy at the time the candidates were
    built, a moving anchor suited to long pretraining and free for rollouts; frozen: a copy of
    the start weights (classic DPO, one more forward and weight copy); none: reference-free."""
    selection: str = "dpo"
    """dpo (chosen = best, rejected = worst, plus best for RF-NLL) | rf_nll (best only)."""
    check_values: bool = True
    """Check masks and log-probs for NaN/inf and empty suffixes every micro-batch."""

    def weights(self) -> MixedWeights:
        return MixedWeights(lm=self.lm.build(), dpo=self.dpo.build(), rf_nll=self.rf_nll.build())

    def loss_config(self) -> LossConfig:
        return LossConfig(beta=self.beta, dpo_reduction=self.dpo_reduction)

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        for name in ("lm", "dpo", "rf_nll"):
            errors += getattr(self, name).validate(f"{path}.{name}")
        _number(errors, f"{path}.beta", self.beta, minimum=0, strictly=True)
        _choice(errors, f"{path}.dpo_reduction", self.dpo_reduction, ("sum", "mean"))
        _choice(errors, f"{path}.reference", self.reference, REFERENCE_MODES)
        _choice(errors, f"{path}.selection", self.selection, RULES)
        if self.selection == "rf_nll" and (self.dpo.start or self.dpo.end):
            errors.append(f"`{path}.selection` is 'rf_nll' (no DPO pairs), but `{path}.dpo` has a "
                          "non-zero weight: set rlpt.loss.dpo.start=0 or selection=dpo.")
        return errors


@dataclass(kw_only=True)
class SyntheticSection:
    """The deterministic group source (rlpt_plugin/rl/synthetic.py) used before a teacher exists."""

    min_prefix: int = 4
    max_prefix: int = 12
    suffix_length: int = 6
    num_rollouts: int = 3
    include_original: bool = True


@dataclass(kw_only=True)
class DataSection:
    """Where each step's candidate groups come from and how they are packed."""

    source: str = "synthetic"
    """synthetic (more sources arrive with the rewritten store and the candidate stage)."""
    groups_per_step: int = 8
    """Candidate groups (prefixes) per optimizer step over ALL data-parallel ranks."""
    seed: int = 1234
    """Seed of the group source."""
    lm_on_original: bool = True
    """Add the LM term's row (prefix + original suffix) for every group that has an original."""
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        _choice(errors, f"{path}.source", self.source, SOURCES)
        _number(errors, f"{path}.groups_per_step", self.groups_per_step, minimum=1, integer=True)
        _number(errors, f"{path}.seed", self.seed, minimum=0, integer=True)
        s = self.synthetic
        for name in ("min_prefix", "max_prefix", "suffix_length"):
            _number(errors, f"{path}.synthetic.{name}", getattr(s, name), minimum=1, integer=True)
        _number(errors, f"{path}.synthetic.num_rollouts", s.num_rollouts, minimum=0, integer=True)
        if isinstance(s.min_prefix, int) and isinstance(s.max_prefix, int) and s.min_prefix > s.max_prefix:
            errors.append(f"`{path}.synthetic.min_prefix` must be <= max_prefix ({s.max_prefix}), "
                          f"but is {s.min_prefix} instead.")
        return errors


@dataclass(kw_only=True)
class RLPTConfig:
    """Self-improving pretraining settings (the ``rlpt`` section)."""

    loss: LossSection = field(default_factory=LossSection)
    data: DataSection = field(default_factory=DataSection)

    def errors(self) -> list[str]:
        return self.loss.validate("rlpt.loss") + self.data.validate("rlpt.data")

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise ConfigError(errors)
