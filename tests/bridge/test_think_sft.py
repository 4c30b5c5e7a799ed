"""Thinking SFT through Bridge: think stores (``rlpt rewrite --task think``) as LM rows of the
step, blended with the groups and the job's own data (rlpt_plugin/megatron/think_dataset.py)."""

from __future__ import annotations

import pytest

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron import launch
from tests.bridge.cases import train_case
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
    from rlpt_plugin.megatron.think_dataset import think_rows
    from rlpt_plugin.megatron.think_store import ThinkStore

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


@pytest.mark.distributed
def test_sft_trains_on_think_rows_with_the_jobs_own_data(think, tmp_path):
    """A few Bridge pretrain() steps: groups + 4 job sequences + 4 think chunks per step; the
    think rows are a real share of the LM term and the loss is finite."""
    store_a, tok, _ = think
    overrides = [*sft(store_a, tok, job=4), "train.train_iters=3", "checkpoint.save=null", "checkpoint.load=null"]
    (records,) = run_distributed(train_case, 1, tmp_path / "w", str(tmp_path / "run"), overrides, JOB)
    assert [r["step"] for r in records] == [0, 1, 2]
    for r in records:
        assert 0.05 < r["think_lm_token_share"] < 0.9 and 0.05 < r["job_lm_token_share"] < 0.9, r
        assert r["loss"] == r["loss"] and r["term_lm"] > 0, r
