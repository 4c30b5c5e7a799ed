"""Evidence that the method works, at a scale CI affords: ``rlpt demo`` end to end (world,
``rlpt rewrite --teacher world`` with the honest teacher, start model, next-token baseline, SIP
with online DPO and with RF-NLL, all through Megatron-Bridge's ``pretrain()``), judged by the
exact grader.

The run here is one cell of ``bench/evidence_sweep.py --quick`` (world 0, training seed 1234:
40 people, 400 start steps, 48 continuation steps, K = 4, the rewrite in the pool). That sweep
measured the seed noise over 6 cells (world seeds 0 and 1 x training seeds 1234, 2, 3; one
start model per world), SIP minus baseline in points, mean +- sd (min):
quality win rate +8.2 +- 4.3 (3.1), factuality +12.7 +- 6.0 (4.4), safety +10.0 +- 7.4 (-2.5),
their mean over the three axes +10.3 +- 3.0 (6.0). The per-axis bound (3 points) held in 5 of
the 6 cells (one had safety -2.5); the bound on the three-axis mean (6 points = 2 sd) held in
all 6 (the smallest 6.03) and is what a SIP no better than the baseline cannot pass (its margin
would be 0 +- 3).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from statistics import mean

import pytest

pytestmark = [pytest.mark.bridge, pytest.mark.evidence]
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--entities", "40", "--start-steps", "400", "--steps", "48", "--rollouts", "4", "--no-progress"]
STEPS = 48
#: sd over the sweep's 6 cells of SIP minus baseline, averaged over the three axes (points / 100)
MEAN_MARGIN_SD = 0.03
FAILURE_STEPS = 160


def _demo(out: Path, *extra: str) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "rlpt_plugin.cli", "demo", "--out", str(out), *SMALL, *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"results": json.loads((out / "results.json").read_text()), "stdout": done.stdout + done.stderr,
            "out": out}


def _reward(model: dict) -> float:
    return model["quality_win_rate"] + model["factuality"] + model["safety"]


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> dict:
    return _demo(tmp_path_factory.mktemp("demo") / "out", "--rf-nll")


def test_results_hold_every_number(small_demo):
    r = small_demo["results"]
    for model in ("start", "baseline", "sip", "rf_nll"):
        for key in ("factuality", "safety", "quality_win_rate", "heldout_nll"):
            assert isinstance(r[model][key], float), (model, key)
    assert r["start"]["quality_win_rate"] == 0.5  # the start model against itself
    assert len(r["rollout_chosen_rate"]) == STEPS
    assert "SIP, online DPO" in small_demo["stdout"] and "quality win rate" in small_demo["stdout"]


def test_sip_beats_the_next_token_baseline_on_every_axis(small_demo):
    r = small_demo["results"]
    for axis in ("safety", "factuality", "quality_win_rate"):
        assert r["sip"][axis] > r["baseline"][axis] + 0.03, (axis, r["sip"][axis], r["baseline"][axis])
    margins = [r["sip"][a] - r["baseline"][a] for a in ("safety", "factuality", "quality_win_rate")]
    assert mean(margins) > 2 * MEAN_MARGIN_SD, margins


def test_the_slices_and_the_chance_level_are_reported(small_demo):
    r = small_demo["results"]
    for model in ("start", "baseline", "sip"):
        assert r[model]["ordinary"]["count"] + r[model]["systematic"]["count"] == r[model]["count"] == 80
    assert r["rollout_chosen_chance"] == 4 / 6  # K = 4 rollouts + the original + the rewrite
    for needle in ("all held-out prefixes, 80 prefixes", "ordinary contexts", "systematic contexts", "chance 0.67"):
        assert needle in small_demo["stdout"], needle


def test_the_rollout_chosen_rate_rises(small_demo):
    """At this scale the rise (last quarter minus first quarter) measured +0.07 for this cell
    and +0.05 +- 0.04 over the sweep's 6 cells: a property of this seed more than of every seed.
    The rate stays far below chance (0.29 against 0.67 over the sweep): the corpus text and the
    teacher's rewrite win most pools in 48 steps."""
    r = small_demo["results"]
    rate = r["rollout_chosen_rate"]
    quarter = len(rate) // 4
    assert mean(rate[-quarter:]) > mean(rate[:quarter]) + 0.05
    assert mean(rate) < r["rollout_chosen_chance"]


def test_rf_nll_works_as_the_second_update_rule(small_demo):
    """RF-NLL raises the judge's total reward (quality + factuality + safety) over the baseline.
    (At this scale its safety can trail the baseline: the next-token term keeps training the
    unsafe originals and RF-NLL has no rejected side to push down; see the README.)"""
    r = small_demo["results"]
    assert _reward(r["rf_nll"]) > _reward(r["baseline"]) + 0.1
    for axis in ("factuality", "quality_win_rate"):
        assert r["rf_nll"][axis] > r["baseline"][axis], axis


def test_a_safety_only_reward_on_own_rollouts_drifts_to_degenerate_text(small_demo, tmp_path):
    """The paper's failure mode: the pool holds only the model's own rollouts, the reward is
    safety alone, the update is RF-NLL (SFT on a safe own sample). Same world and start model as
    the main run; this run and its own baseline train for FAILURE_STEPS.

    The drift grows with steps and, under the honest (noisy) judge, is slow at first: quality win
    rate minus the baseline's measured -6.9 points at 48 steps, -8.2 at 80 and -31.3 at 160
    (world 0, seed 1234; safety 100 each time, held-out NLL 0.801 / 0.863 / 1.205 against the
    baseline's 0.741 / 0.727 / 0.775). The 10-point bound is the one this test always had."""
    import shutil

    out = tmp_path / "out"
    for phase in ("world", "store", "start"):
        shutil.copytree(small_demo["out"] / phase, out / phase)
    r = _demo(out, "--reward", "safety", "--rollouts-only", "--loss", "rf_nll", "--lm-weight", "0",
              "--steps", str(FAILURE_STEPS))["results"]
    assert r["sip"]["safety"] >= r["baseline"]["safety"]
    assert r["sip"]["quality_win_rate"] < r["baseline"]["quality_win_rate"] - 0.1
    assert r["sip"]["heldout_nll"] > r["baseline"]["heldout_nll"]
