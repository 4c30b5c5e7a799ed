"""Megatron-Bridge's real ``pretrain()`` hosting the plugin: resume, learning, multi-process.

Each test spawns its own process(es): Bridge mutates process-wide state (parallel groups,
the micro-batch calculator, the CPU backend), which must not leak into the pytest process.
"""

from __future__ import annotations

import math
from pathlib import Path
from statistics import mean

import pytest
import torch
import yaml

from tests.bridge.cases import learning_case, pp2_case, resume_case
from tests.distributed.harness import run_distributed

pytestmark = [pytest.mark.bridge, pytest.mark.distributed]


def test_checkpoint_resume_is_exact(tmp_path):
    """8 steps straight == 4 steps, stop (train.exit_interval), resume for 4: every metric of
    every step and every final weight identical. All three terms and the FROZEN reference are
    active, so the resumed run must reload the start weights, not the resumed ones."""
    overrides = ["rlpt.loss.reference=frozen", "rlpt.loss.rf_nll.start=0.5", "rlpt.loss.beta=0.5"]
    (res,) = run_distributed(resume_case, 1, tmp_path / "w", str(tmp_path), overrides, 8, 4)
    straight, first, second = res["straight"], res["first"], res["second"]
    assert [r["step"] for r in straight] == list(range(8))
    assert [r["step"] for r in first] == list(range(4))
    assert [r["step"] for r in second] == list(range(4, 8))
    for want, got in zip(straight, first + second):
        assert got == want, f"step {want['step']}: {got} != {want}"
    assert abs(straight[-1]["dpo_reward_margin"]) > 0  # the frozen reference is in play
    assert res["straight_weights"].keys() == res["resumed_weights"].keys()
    for name, weight in res["straight_weights"].items():
        assert torch.equal(weight, res["resumed_weights"][name]), name
    assert (tmp_path / "resumed" / "ckpt" / "rlpt_frozen_reference" / "metadata.json").exists()
    # The rlpt section, with the command-line overrides applied, is in the checkpoint.
    run_config = next((tmp_path / "resumed" / "ckpt").glob("iter_*/run_config.yaml"))
    rlpt = yaml.safe_load(run_config.read_text())["rlpt"]
    assert rlpt["loss"]["reference"] == "frozen" and rlpt["loss"]["beta"] == 0.5
    assert rlpt["loss"]["rf_nll"]["start"] == 0.5


def test_dpo_and_rf_nll_learn(tmp_path):
    runs = {
        # Online DPO alone: the policy's chosen-minus-rejected log-prob gap must widen.
        "dpo": ["train.train_iters=16", "rlpt.loss.lm.start=0", "rlpt.loss.beta=1.0"],
        # RF-NLL alone: the NLL of the selected (best) candidate must fall.
        "rf_nll": ["train.train_iters=16", "rlpt.loss.selection=rf_nll", "rlpt.loss.dpo.start=0",
                   "rlpt.loss.lm.start=0", "rlpt.loss.rf_nll.start=1"],
    }
    (res,) = run_distributed(learning_case, 1, tmp_path / "w", str(tmp_path), runs)
    gap = [r["chosen_logp"] - r["rejected_logp"] for r in res["dpo"]]
    assert mean(gap[-4:]) - mean(gap[:4]) > 1.0, gap
    rf = [r["rf_nll"] for r in res["rf_nll"]]
    assert mean(rf[:4]) - mean(rf[-4:]) > 0.3, rf
    assert "dpo_loss" not in res["rf_nll"][0]  # no pairs under the rf_nll rule: not reported


def test_pipeline_parallel_pretrain_with_model_pass_references(tmp_path):
    """PP2 through pretrain(): the reference pass crosses both stages at every step start."""
    first, last = run_distributed(pp2_case, 2, tmp_path / "w", str(tmp_path))
    for mode in ("frozen", "rollout"):
        assert first[mode] == []  # loss metrics live on the last stage only
        assert [r["step"] for r in last[mode]] == [0, 1, 2]
        assert all(torch.isfinite(torch.tensor(r["loss"])) for r in last[mode])
    assert abs(last["frozen"][-1]["dpo_reward_margin"]) > 0  # start weights != policy after a step
    # The rollout-time reference is the policy itself at step start: margin exactly 0, loss ln 2.
    assert all(r["dpo_reward_margin"] == 0 and abs(r["dpo_loss"] - math.log(2)) < 1e-6
               for r in last["rollout"])
