"""An existing Bridge job's own data blended into the LM term (``rlpt.data.job_sequences_per_step``).

The job is a plain Bridge ``ConfigContainer`` on Megatron GPT data (tests/bridge/job_recipe.py);
``rlpt train`` wraps it with with_rlpt, which keeps that dataset as ``dataset.job_data``.
"""

from __future__ import annotations

import pytest
import torch

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host import launch
from tests.bridge.cases import resume_case, train_case
from tests.bridge.job_recipe import EOD
from tests.distributed.harness import run_distributed

pytestmark = pytest.mark.bridge
JOB = "tests.bridge.job_recipe:plain_job"
# 8 synthetic groups (<= 3 rows each) + 4 job sequences per step: 7 rows per micro-batch of 4.
# The groups are the ready-made synthetic ones, which a job must ask for by name.
BLEND = ["rlpt.data.source=synthetic", "rlpt.data.job_sequences_per_step=4", "train.micro_batch_size=7",
         "train.global_batch_size=28"]


def test_a_plain_bridge_job_is_wrapped_and_keeps_its_own_data(tmp_path):
    from megatron.bridge.training.config import GPTDatasetConfig

    from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer, RLPTDataProvider

    cfg = launch.build_config(JOB, tmp_path, [*BLEND, "dataset.job_data.random_seed=5", "optimizer.lr=1e-3"])
    assert isinstance(cfg, RLPTConfigContainer) and isinstance(cfg.dataset, RLPTDataProvider)
    job = cfg.dataset.job_data
    assert isinstance(job, GPTDatasetConfig) and job.random_seed == 5 and job.eod_mask_loss
    assert cfg.optimizer.lr == 1e-3 and cfg.rlpt.data.job_sequences_per_step == 4
    assert "job_data:" in launch.resolved_yaml(cfg)
    plan = launch.dry_run(JOB, tmp_path, BLEND, suffix_length=8, step_time_s=1.0)
    assert "+ 4 job data +" in plan


def test_job_data_settings_are_validated_up_front(tmp_path):
    with pytest.raises(ConfigError) as info:
        launch.build_config(JOB, tmp_path, [*BLEND, "dataset.job_data.sequence_length=16",
                                            "dataset.job_data.reset_position_ids=true", "rlpt.loss.lm.start=0"])
    message = str(info.value)
    assert "`dataset.job_data.sequence_length` (16) must equal `model.seq_length` (24)" in message
    assert "`dataset.job_data.reset_position_ids` must be False" in message
    assert "`rlpt.loss.lm` has weight 0 throughout" in message
    with pytest.raises(ConfigError, match=r"`dataset.job_data` is None"):
        launch.build_config("rlpt_plugin.recipes.tiny:tiny_config", tmp_path, BLEND)
    with pytest.raises(ConfigError, match=r"`rlpt.data.job_sequences_per_step` must be >= 0"):
        launch.build_config(JOB, tmp_path, ["rlpt.data.source=synthetic", "rlpt.data.job_sequences_per_step=-1"])


def test_job_rows_are_the_jobs_own_gpt_samples(tmp_path):
    """Row i is sample i of the job's GPT dataset (Megatron's own builder, blend and seed): the
    same tokens and labels, its loss mask (Megatron masks the label after an EOD), and real
    corpus text."""
    from megatron.bridge.training.tokenizers.tokenizer import build_tokenizer
    from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
    from megatron.core.datasets.gpt_dataset import GPTDataset

    from rlpt_plugin.megatron.data.job_data import job_rows

    cfg = launch.build_config(JOB, tmp_path, BLEND)
    cfg.dataset.job_data.finalize()
    cfg.dataset.tokenizer = build_tokenizer(cfg.tokenizer)  # as Bridge's setup does
    rows = job_rows(cfg)
    samples = cfg.train.train_iters * 4
    reference = BlendedMegatronDatasetBuilder(GPTDataset, [samples, 0, 0], lambda: True,
                                              cfg.dataset.job_data).build()[0]
    masked = 0
    for i in range(samples):
        row, sample = rows(i), reference[i]
        assert len(row.tokens) == cfg.model.seq_length + 1 and row.lm and not row.roles
        assert list(row.tokens[:-1]) == sample["tokens"].tolist()
        assert list(row.tokens[1:]) == sample["labels"].tolist()
        assert list(row.lm_mask) == sample["loss_mask"].tolist()
        for a, b, m in zip(row.tokens, row.tokens[1:], row.lm_mask):
            # eod_mask_loss (Megatron's rule): no loss where the INPUT is EOD (across documents)
            assert (m == 0.0) == (a == EOD)
            assert a == EOD or b == EOD or b == a % (EOD - 1) + 1, (i, a, b)  # the counting corpus
        masked += row.lm_mask.count(0.0)
    assert masked > 0
    assert len({rows(i).tokens for i in range(samples)}) > samples // 2  # not one repeated sample


@pytest.mark.distributed
def test_blended_run_resumes_exactly_and_matches_dp2(tmp_path):
    """8 steps straight == 4 + resumed 4, with the job's sequences in every step; and DP2 trains
    the same first steps as DP1 (the job's data is shared over data-parallel ranks)."""
    (res,) = run_distributed(resume_case, 1, tmp_path / "w", str(tmp_path), BLEND, 8, 4, JOB)
    straight, resumed = res["straight"], res["first"] + res["second"]
    assert [r["step"] for r in resumed] == list(range(8))
    for want, got in zip(straight, resumed):
        assert got == want, f"step {want['step']}: {got} != {want}"
    for name, weight in res["straight_weights"].items():
        assert torch.equal(weight, res["resumed_weights"][name]), name
    shares = [r["job_lm_token_share"] for r in straight]
    assert all(0.2 < s < 0.9 for s in shares), shares  # the job's data is a real part of the LM term
    dp2 = run_distributed(train_case, 2, tmp_path / "w2", str(tmp_path / "dp2"),
                          [*BLEND, "train.train_iters=8", "train.exit_interval=3",
                           "checkpoint.save=null", "checkpoint.load=null"], JOB)
    assert [r["step"] for r in dp2[0]] == [0, 1, 2]
    for want, got in zip(straight[:3], dp2[0]):
        for key in ("loss", "term_lm", "job_lm_token_share", "num_lm_tokens"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (key, got, want)
