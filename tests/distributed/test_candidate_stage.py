"""candidates -> judge -> packed DPO batch -> Megatron step, for 3 training steps, at TP1, TP2 and
PP2, judging synchronously (staleness 0) and one step ahead (staleness 1). Rollouts are
layout-invariant, so every layout must reproduce TP1's losses and rollout-chosen rates."""

from __future__ import annotations

import pytest

from tests.distributed.harness import run_distributed
from tests.distributed.stage_cases import run_failing_cases, run_stage_cases

pytestmark = pytest.mark.distributed


def test_candidate_stage_steps_are_layout_invariant(tmp_path):
    cases = [dict(tp=1, pp=1, staleness=0), dict(tp=1, pp=1, staleness=1),
             dict(tp=1, pp=1, staleness=0, recorded=True), dict(tp=1, pp=1, staleness=1, recorded=True)]
    (single,) = run_distributed(run_stage_cases, 1, tmp_path / "one", cases)
    s0, s1, r0, r1 = single
    # Judged at once, the rollout-time policy IS the step-start policy: recorded == rescored.
    assert r0["losses"] == pytest.approx(s0["losses"], abs=2e-5)
    # One step ahead, the recorded reference is the older policy: the losses differ.
    assert r1["losses"][2] != pytest.approx(s1["losses"][2], abs=1e-4)
    assert s0["waits"] == 3 and s1["waits"] == 3  # the trainer waited (or not) once per step
    assert s0["judge_calls"] == 24 and s1["judge_calls"] == 32  # staleness 1 judges one step ahead
    assert s0["unjudged"] > 0  # pools the judge could not score were counted, not scored 0
    assert s0["losses"][0] == pytest.approx(s1["losses"][0], abs=1e-6)  # step 0: same policy
    # Data metrics reach the trainer's reported metrics: the rollout-chosen rate and the wait.
    assert [m["rollout_chosen_rate"] for m in s0["metrics"]] == pytest.approx(s0["rates"])
    assert all(m["judge_wait_s"] >= 0.009 for m in s0["metrics"])  # the judge sleeps 10 ms
    assert s0["losses"][1] != pytest.approx(s1["losses"][1], abs=1e-4)  # later: older rollouts
    two = run_distributed(run_stage_cases, 2, tmp_path / "two",
                          [dict(tp=2, pp=1, staleness=1), dict(tp=1, pp=2, staleness=0),
                           dict(tp=2, pp=1, staleness=1, recorded=True), dict(tp=1, pp=2, staleness=1, recorded=True)])
    for i, want in enumerate((s1, s0, r1, r1)):
        for rank in two:
            got = rank[i]
            assert got["rates"] == want["rates"], got["case"]
            if got["losses"]:
                assert got["losses"] == pytest.approx(want["losses"], abs=2e-5), got["case"]


def test_judge_metrics_reach_the_trainer_on_every_layout(tmp_path):
    results = run_distributed(run_stage_cases, 2, tmp_path, [dict(tp=1, pp=2, staleness=0)])
    last_stage = results[1][0]
    for m in last_stage["metrics"]:  # PP2: the judging rank (stage 0) is not the logging rank
        assert 0.0 <= m["score_quality_original"] <= 1.0 and 0.0 <= m["score_quality_rollout"] <= 1.0
        assert m["judge_calls_per_prefix"] > 0 and m["judge_failures"] >= 0


def test_a_broken_judge_stops_every_rank_with_the_reason(tmp_path):
    """The judge raising, never answering in time, or never giving a usable answer: every rank of
    every layout stops at the same step with the reason, instead of the other ranks waiting in
    the broadcast (a raise on the judging rank only) or training on as next-token training."""
    cases = [dict(tp=2, pp=1, staleness=1, how="raises"), dict(tp=1, pp=2, staleness=0, how="raises"),
             dict(tp=2, pp=1, staleness=1, how="unparsable"), dict(tp=1, pp=2, staleness=1, how="unparsable"),
             dict(tp=1, pp=2, staleness=0, how="slow"), dict(tp=1, pp=1, staleness=1, how="one_replica")]
    ranks = run_distributed(run_failing_cases, 2, tmp_path, cases)
    for i, case in enumerate(cases):
        got = [rank[i] for rank in ranks]
        assert got[0]["step"] is not None and all(g["step"] == got[0]["step"] for g in got), (case, got)
        assert not any(g["loop_alive"] for g in got)  # closed: no judge thread left behind
        messages = [g["message"] for g in got]
        if case["how"] == "raises":
            assert got[0]["step"] == 0 and all("ConnectionError: judge-0:8000 refused" in m for m in messages)
        elif case["how"] == "one_replica":  # DP2: the healthy replica stops with the broken one
            assert got[0]["step"] == 0 and "other data-parallel replica" in messages[0]
            assert "ConnectionError: judge-0:8000 refused" in messages[1]
        elif case["how"] == "slow":
            assert got[0]["step"] == 0 and all("within 0.5 s" in m for m in messages)
        else:  # window of 2 steps: trips on the second, names the share and shows the answer
            assert got[0]["step"] == 1, got
            assert all("100%" in m and "answer: 'I think both are fine.'" in m for m in messages)
