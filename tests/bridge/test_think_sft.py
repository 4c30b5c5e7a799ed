"""Thinking SFT through Bridge: think stores (``rlpt rewrite --task think``) as LM rows of the
step, blended with the groups and the job's own data (rlpt_plugin/megatron/data/think_dataset.py)."""

from __future__ import annotations

import math

import pytest
import torch

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host import launch
from tests.bridge.cases import resume_case
from tests.distributed.harness import run_distributed
from tests.rewrite.think_cases import small_think_store

pytestmark = pytest.mark.bridge
JOB = "tests.bridge.job_recipe:plain_job"


def sft(store, tok, job: int = 0) -> list[str]:
    # 8 synthetic groups (<= 3 rows each) + job + 4 think rows per step over 4 micro-batches.
    mbs = 6 + (job + 4) // 4
    return ["rlpt.data.source=synthetic", f"rlpt.data.think_stores=[{store}]", "rlpt.data.think_sequences_per_step=4",
            f"rlpt.data.tokenizer={tok}", f"rlpt.data.job_sequences_per_step={job}",
            f"train.micro_batch_size={mbs}", f"train.global_batch_size={4 * mbs}"]


@pytest.fixture(scope="module")
def think(tmp_path_factory):
    root = tmp_path_factory.mktemp("think_sft")
    return small_think_store(root / "a", seed=0) + (small_think_store(root / "b", seed=1)[0],)


def test_think_rows_are_the_stored_augmented_chunks_trained_on_every_token(think, tmp_path):
    from rlpt_plugin.megatron.data.think_dataset import think_rows
    from rlpt_plugin.megatron.data.think_store import ThinkStore

    store_a, tok, store_b = think
    cfg = launch.build_config(JOB, tmp_path, [*sft(store_a, tok)[:4], "rlpt.data.think_stores="
                                              f"[{store_a},{store_b}]", "train.micro_batch_size=7",
                                              "train.global_batch_size=28"])
    stored = {}
    for path in (store_a, store_b):
        s = ThinkStore(path)
        stored.update({tuple(s[i].tokens.tolist()): s[i] for i in range(len(s))})
    rows = think_rows(cfg)
    s_plus_1 = cfg.model.seq_length + 1
    seen = set()
    for i in range(cfg.train.train_iters * 4):
        row = rows(i)
        assert row.lm and not row.roles and row.lm_mask is None  # loss on every token
        assert row.candidate_length == len(row.tokens) - 1
        match = [t for t in stored if t[:s_plus_1] == row.tokens]
        assert match, f"row {i} is no stored chunk"
        chunk = stored[match[0]]
        assert chunk.mask.sum() > 0 and chunk.tokens[chunk.mask == 0].tolist() == chunk.original.tolist()
        seen.add(match[0])
    from_b = {tuple(ThinkStore(store_b)[i].tokens.tolist()) for i in range(len(ThinkStore(store_b)))}
    assert seen & from_b and seen - from_b  # both stores blend in
    assert rows(3).tokens == rows(3).tokens  # a pure function of the index


def test_think_settings_are_checked_at_setup(think, tmp_path):
    store_a, tok, _ = think
    with pytest.raises(ConfigError) as info:
        launch.build_config(JOB, tmp_path, [*sft(store_a, tok)[:4], "rlpt.data.think_sequences_per_step=0"])
    assert "`rlpt.data.think_sequences_per_step` (0) must be > 0 exactly when" in str(info.value)
    with pytest.raises(ConfigError) as info:
        launch.build_config(JOB, tmp_path, [*sft(tmp_path / "nowhere", tok)])
    assert "is not a think store (no manifest.json)" in str(info.value)
    rewritten = tmp_path / "rewritten"
    rewritten.mkdir()
    (rewritten / "manifest.json").write_text('{"format": "rlpt-rewritten-store-v1"}')
    with pytest.raises(ConfigError) as info:  # a rewritten store is not a think store
        launch.build_config(JOB, tmp_path, [*sft(store_a, tok)[:1], f"rlpt.data.think_stores=[{rewritten}]",
                                            *sft(store_a, tok)[2:]])
    assert "a rewritten store goes in rlpt.data.stores" in str(info.value)
    plan = launch.dry_run(JOB, tmp_path, sft(store_a, tok, job=4), suffix_length=8, step_time_s=1.0)
    assert "+ 4 job data + 4 think data +" in plan, plan


@pytest.mark.distributed
def test_sft_on_think_rows_with_the_jobs_own_data_resumes_exactly(think, tmp_path):
    """Bridge pretrain() with groups + 4 job sequences + 4 think chunks per step: the think rows
    are a real share of the LM term, and 4 steps straight == 2 + resumed 2 (metrics, weights)."""
    store_a, tok, _ = think
    (res,) = run_distributed(resume_case, 1, tmp_path / "w", str(tmp_path), sft(store_a, tok, job=4), 4, 2, JOB)
    straight, resumed = res["straight"], res["first"] + res["second"]
    assert [r["step"] for r in resumed] == list(range(4))
    for want, got in zip(straight, resumed):
        assert got == want, f"step {want['step']}: {got} != {want}"
    for name, weight in res["straight_weights"].items():
        assert torch.equal(weight, res["resumed_weights"][name]), name
    for r in straight:
        assert 0.05 < r["think_lm_token_share"] < 0.9 and 0.05 < r["job_lm_token_share"] < 0.9, r
        assert math.isfinite(r["loss"]) and r["term_lm"] > 0, r
