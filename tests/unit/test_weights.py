"""Tests for rlpt_plugin.rl.weights: schedule values against hand-computed numbers."""

from __future__ import annotations

import math

import pytest

from rlpt_plugin.rl.losses import LossWeights
from rlpt_plugin.rl.weights import MixedWeights, WeightSchedule


def test_constant_is_start_everywhere() -> None:
    schedule = WeightSchedule(start=0.25)
    assert [schedule.value(s) for s in (0, 1, 10, 10**9)] == [0.25] * 4
    assert isinstance(WeightSchedule(start=2).value(3), float)


def test_linear_begin_mid_end_and_outside() -> None:
    schedule = WeightSchedule(kind="linear", start=1.0, end=0.0, begin_step=100, end_step=300)
    assert schedule.value(0) == 1.0
    assert schedule.value(100) == 1.0
    assert schedule.value(150) == pytest.approx(0.75, abs=1e-15)
    assert schedule.value(200) == pytest.approx(0.5, abs=1e-15)
    assert schedule.value(300) == 0.0
    assert schedule.value(10_000) == 0.0
    rising = WeightSchedule(kind="linear", start=0.0, end=2.0, end_step=4)
    assert [rising.value(s) for s in range(6)] == [0.0, 0.5, 1.0, 1.5, 2.0, 2.0]


def test_cosine_begin_mid_end_and_outside() -> None:
    schedule = WeightSchedule(kind="cosine", start=0.0, end=1.0, begin_step=10, end_step=20)
    assert schedule.value(5) == 0.0 and schedule.value(10) == 0.0
    assert schedule.value(15) == pytest.approx(0.5, abs=1e-15)
    # A fifth of the way along half a cosine: (1 - cos(pi/5)) / 2.
    assert schedule.value(12) == pytest.approx((1 - math.cos(math.pi * 0.2)) / 2, abs=1e-15)
    assert schedule.value(20) == 1.0 and schedule.value(21) == 1.0
    falling = WeightSchedule(kind="cosine", start=3.0, end=1.0, end_step=4)
    assert falling.value(1) == pytest.approx(1.0 + 2.0 * (1 + math.cos(math.pi / 4)) / 2, abs=1e-15)
    # Cosine is slower than linear near the start and faster in the middle.
    linear = WeightSchedule(kind="linear", start=3.0, end=1.0, end_step=4)
    assert falling.value(1) > linear.value(1)
    values = [falling.value(s) for s in range(5)]
    assert values == sorted(values, reverse=True)


def test_schedule_errors_are_collected_in_one_message() -> None:
    with pytest.raises(ValueError) as info:
        WeightSchedule(kind="cosine", start=-1.0, begin_step=5, end_step=5)
    message = str(info.value)
    assert "`start` must be a finite number >= 0, but is -1.0 instead." in message
    assert "`end` must be set for kind 'cosine', but is None instead." in message
    assert "`end_step` must be > begin_step (5) for kind 'cosine', but is 5 instead." in message
    with pytest.raises(ValueError) as info:
        WeightSchedule(kind="step", start=float("nan"), begin_step=-1, end_step=1.5)  # type: ignore[arg-type]
    message = str(info.value)
    for key in ("`kind` must be one of", "`start` must be", "`begin_step` must be an int >= 0, but is -1",
                "`end_step` must be an int >= 0, but is 1.5"):
        assert key in message


@pytest.mark.parametrize("kwargs, match", [
    (dict(start=1.0, end=0.5), "`end` must be None for kind 'constant', but is 0.5 instead."),
    (dict(kind="linear", start=1.0, end=-0.5, end_step=3), "`end` must be a finite number >= 0"),
    (dict(kind="linear", start=1.0, end=0.0, begin_step=9, end_step=3), "`end_step` must be > begin_step"),
])
def test_schedule_single_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match.replace("(", r"\(").replace(")", r"\)")):
        WeightSchedule(**kwargs)


def test_value_rejects_bad_step_and_positional_args() -> None:
    with pytest.raises(ValueError, match="step must be an int >= 0, but got -1"):
        WeightSchedule(start=1.0).value(-1)
    with pytest.raises(TypeError):
        WeightSchedule("constant", 1.0)  # type: ignore[misc]  # keyword-only


def test_mixed_weights_at_step() -> None:
    mixed = MixedWeights(lm=WeightSchedule(start=1.0),
                         dpo=WeightSchedule(kind="linear", start=0.0, end=1.0, end_step=10),
                         rf_nll=WeightSchedule(kind="cosine", start=0.0, end=0.5, begin_step=10, end_step=20))
    assert mixed.at(0) == LossWeights(lm=1.0, dpo=0.0, rf_nll=0.0)
    assert mixed.at(5) == LossWeights(lm=1.0, dpo=0.5, rf_nll=0.0)
    assert mixed.at(15).rf_nll == pytest.approx(0.25, abs=1e-15)
    assert mixed.at(100) == LossWeights(lm=1.0, dpo=1.0, rf_nll=0.5)


def test_mixed_weights_constant_helper_and_validation() -> None:
    assert MixedWeights.constant().at(7) == LossWeights(lm=1.0, dpo=1.0, rf_nll=0.0)
    assert MixedWeights.constant(lm=0.5, dpo=2.0, rf_nll=0.1).at(0) == LossWeights(lm=0.5, dpo=2.0, rf_nll=0.1)
    with pytest.raises(ValueError, match="`start` must be a finite number >= 0"):
        MixedWeights.constant(dpo=-1.0)
    with pytest.raises(ValueError, match="`dpo` must be a WeightSchedule, but is float instead."):
        MixedWeights(lm=WeightSchedule(start=1.0), dpo=1.0, rf_nll=WeightSchedule(start=0.0))  # type: ignore[arg-type]
