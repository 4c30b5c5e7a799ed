"""Loss AND parameter gradients of the mixed LM + DPO + RF-NLL step are layout-independent.

Reference: TP1 PP1 DP1, all 8 groups of the step and its 4 LM-only rows (the job's own data,
with masked labels) in ONE micro-batch. Every other run splits the
same global step differently (4 micro-batches; extra padding rows and positions; TP2; PP2 1F1B;
DP2; and the 4-process products) and must give the same loss and the same full gradients.
The frozen reference model is scored through the pipeline too, so PP covers that path.
Observed on CPU fp32 (2 cores): max |diff| 2.4e-7 on the loss, 3.2e-7 on any gradient entry.

Prefix-shared rows ("shared": each pool ONE row after one copy of its prefix, block mask, RoPE
from position ids) are compared against the SAME unpacked reference, under every layout above:
packed and unpacked rows give the same loss, counts and full gradients.

Every layout runs twice: the LM + DPO + RF-NLL step, and the LM + Dr. GRPO step (each rollout a
row with its advantage; the micro-batch sizes grow by one row per group in a micro-batch to
hold the K = 3 rollouts), each against its own TP1 PP1 DP1 single-micro-batch reference.
"""

from __future__ import annotations

import pytest
import torch

from tests.distributed.cases import run_cases, shared_logps_case
from tests.distributed.harness import run_distributed
from tests.distributed.tiny_gpt import assemble

pytestmark = pytest.mark.distributed

LOSS_ATOL = 2e-6
GRAD_ATOL, GRAD_RTOL = 2e-6, 1e-5
REFERENCE = dict(tp=1, pp=1, mbs=28, num_mb=1, seq=24)
ONE_PROCESS = {
    "4 micro-batches": dict(tp=1, pp=1, mbs=7, num_mb=4, seq=24),
    "extra padding": dict(tp=1, pp=1, mbs=9, num_mb=4, seq=40),
    "shared, 1 micro-batch": dict(tp=1, pp=1, mbs=28, num_mb=1, seq=24, shared=True),
    "shared, 4 micro-batches": dict(tp=1, pp=1, mbs=7, num_mb=4, seq=24, shared=True),
    "shared, 8 micro-batches": dict(tp=1, pp=1, mbs=4, num_mb=8, seq=24, shared=True),
    "shared, extra padding": dict(tp=1, pp=1, mbs=9, num_mb=4, seq=40, shared=True),
}
TWO_PROCESSES = {
    "TP2": dict(tp=2, pp=1, mbs=7, num_mb=4, seq=24),
    "PP2 (1F1B)": dict(tp=1, pp=2, mbs=7, num_mb=4, seq=24),
    "DP2": dict(tp=1, pp=1, mbs=7, num_mb=2, seq=24),
    "shared TP2": dict(tp=2, pp=1, mbs=7, num_mb=4, seq=24, shared=True),
    "shared PP2 (1F1B)": dict(tp=1, pp=2, mbs=7, num_mb=4, seq=24, shared=True),
    "shared DP2": dict(tp=1, pp=1, mbs=7, num_mb=2, seq=24, shared=True),
}
FOUR_PROCESSES = {
    "TP2xPP2": dict(tp=2, pp=2, mbs=7, num_mb=4, seq=24),
    "TP2xDP2": dict(tp=2, pp=1, mbs=7, num_mb=2, seq=24),
    "PP2xDP2": dict(tp=1, pp=2, mbs=7, num_mb=2, seq=24),
    "shared TP2xPP2": dict(tp=2, pp=2, mbs=7, num_mb=4, seq=24, shared=True),
    "shared TP2xDP2": dict(tp=2, pp=1, mbs=7, num_mb=2, seq=24, shared=True),
    "shared PP2xDP2": dict(tp=1, pp=2, mbs=7, num_mb=2, seq=24, shared=True),
}


RULES = ("dpo", "grpo")
COMPARED = {"dpo": ("num_pairs", "num_lm_tokens", "num_rf_tokens", "dpo_accuracy"),
            "grpo": ("num_lm_tokens", "num_grpo_tokens", "grpo_clip_fraction", "grpo_abs_advantage")}


def with_rule(case: dict, rule: str, processes: int = 1) -> dict:
    """The case for ``rule``: GRPO packs an LM row + 3 rollout rows per group (DPO: at most 3),
    so each micro-batch holds one row more per group it gets."""
    if rule == "dpo":
        return case
    dp = processes // (case["tp"] * case["pp"])
    return {**case, "rule": rule, "mbs": case["mbs"] + 8 // (dp * case["num_mb"])}


def _run(processes: int, tmp_path, cases: dict[str, dict]) -> list[tuple[str, str, list[dict]]]:
    """(rule, name, per-rank results) of every case under both rules, in one spawn."""
    todo = [(rule, name, with_rule(case, rule, processes)) for rule in RULES for name, case in cases.items()]
    results = run_distributed(run_cases, processes, tmp_path, [c for _, _, c in todo])
    return [(rule, name, [rank[i] for rank in results]) for i, (rule, name, _) in enumerate(todo)]


def _compare(reference: dict, per_rank: list[dict], name: str) -> None:
    losses = [r["metrics"]["loss"] for r in per_rank if r["metrics"] is not None]
    assert losses, f"{name}: no rank reported a loss"
    for loss in losses:
        assert abs(loss - reference["metrics"]["loss"]) <= LOSS_ATOL, (name, loss, reference["metrics"]["loss"])
    for key in COMPARED[reference["case"].get("rule", "dpo")]:
        assert per_rank[-1]["metrics"][key] == pytest.approx(reference["metrics"][key], abs=1e-9), (name, key)
    want = assemble([reference["grads"]])
    got = assemble([r["grads"] for r in per_rank])
    assert set(got) == set(want), f"{name}: parameter sets differ: {sorted(set(got) ^ set(want))}"
    for param in want:
        torch.testing.assert_close(got[param], want[param], atol=GRAD_ATOL, rtol=GRAD_RTOL,
                                   msg=lambda m, p=param: f"{name}: gradient of {p}: {m}")


@pytest.fixture(scope="module")
def single_process(tmp_path_factory) -> dict[str, dict]:
    """name -> result for the DPO step; "grpo" -> the same for the Dr. GRPO step."""
    cases = {"reference": REFERENCE, **ONE_PROCESS}
    by_rule: dict[str, dict] = {rule: {} for rule in RULES}
    for rule, name, (result,) in _run(1, tmp_path_factory.mktemp("one"), cases):
        by_rule[rule][name] = result
    return {**by_rule["dpo"], "grpo": by_rule["grpo"]}


def test_reference_step_is_nontrivial(single_process):
    metrics = single_process["reference"]["metrics"]
    # Every term is active, so the invariance below covers all three.
    assert metrics["num_pairs"] == 8 and metrics["num_rf_tokens"] > 0 and metrics["num_lm_tokens"] > 0
    assert metrics["term_dpo"] > 0 and metrics["term_lm"] > 0 and metrics["term_rf_nll"] > 0
    assert 0.2 < metrics["job_lm_token_share"] < 0.8  # the job's rows are a real part of the LM term
    assert abs(metrics["dpo_reward_margin"]) > 1e-3  # the frozen reference differs from the policy


def test_grpo_reference_step_is_nontrivial(single_process):
    metrics = single_process["grpo"]["reference"]["metrics"]
    assert metrics["num_grpo_tokens"] > 0 and metrics["num_lm_tokens"] > 0
    assert metrics["term_grpo"] != 0 and metrics["grpo_abs_advantage"] > 0
    assert 0 < metrics["grpo_clip_fraction"] < 1  # the frozen stand-in for the rollout policy differs
    assert "num_pairs" not in metrics and "term_dpo" not in metrics


def _reference(single_process: dict, rule: str) -> dict:
    return single_process["reference"] if rule == "dpo" else single_process["grpo"]["reference"]


@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("name", list(ONE_PROCESS))
def test_microbatch_split_and_padding(single_process, name, rule):
    got = single_process[name] if rule == "dpo" else single_process["grpo"][name]
    _compare(_reference(single_process, rule), [got], f"{rule}: {name}")


def test_two_process_layouts(single_process, tmp_path):
    for rule, name, per_rank in _run(2, tmp_path, TWO_PROCESSES):
        _compare(_reference(single_process, rule), per_rank, f"{rule}: {name}")


def test_four_process_layouts(single_process, tmp_path):
    for rule, name, per_rank in _run(4, tmp_path, FOUR_PROCESSES):
        _compare(_reference(single_process, rule), per_rank, f"{rule}: {name}")


def test_shared_rows_log_probs_equal_unpacked_and_need_mask_and_positions(tmp_path):
    """Every candidate's per-token log-probs in the shared rows equal its unpacked row's; with
    the plain causal mask, or with RoPE at row offsets instead of the position ids, they do not
    (so the equalities above are not vacuous)."""
    (res,) = run_distributed(shared_logps_case, 1, tmp_path)
    assert res["rows_shared"] == 8 < res["rows_plain"]  # one row per pool
    assert res["shared"] <= 1e-5, res
    assert res["no_mask"] > 1e-2 and res["no_rope"] > 1e-2, res


def test_shared_rows_pp2_with_the_shapes_bridge_passes(single_process, tmp_path):
    """Bridge hands the pipeline schedule (model.seq_length, micro_batch_size), not the shared
    rows' wider shape; with variable_seq_lengths the stages exchange the real shape (what
    rlpt_pretrain sets under PP) and the step is still the unpacked reference's."""
    case = dict(tp=1, pp=2, mbs=7, num_mb=4, seq=24, shared=True, bridge_shapes=True)
    results = run_distributed(run_cases, 2, tmp_path, [case])
    _compare(single_process["reference"], [rank[0] for rank in results], "shared PP2, Bridge shapes")
