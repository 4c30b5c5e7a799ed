"""The whole in-loop path through pretrain(): a rewritten store -> rollouts from the live policy
-> a real OpenAI-protocol judge on loopback -> packed DPO batch -> Megatron step."""

from __future__ import annotations

import re

import torch

import pytest

from rlpt_plugin.cli import main as rlpt
from tests.bridge.cases import resume_case, store_case
from tests.distributed.harness import run_distributed
from tests.rewrite.fixtures import make_corpus, make_tokenizer_dir
from tests.rewrite.test_rewrite_job import teacher
from tests.teacher.loopback_server import LoopbackServer

pytestmark = [pytest.mark.bridge, pytest.mark.distributed]
CANDIDATE = re.compile(r"Candidate ([AB]):\n<<<\n(.*?)\n>>>", re.S)


def quality_judge(body: dict) -> str:
    """Prefers the candidate with more even-numbered words (ties: A)."""
    text = body["messages"][-1]["content"]
    found = dict(CANDIDATE.findall(text))
    even = {k: sum(int(w[1:]) % 2 == 0 for w in v.split() if w[1:].isdigit()) for k, v in found.items()}
    return "A is better.\nWinner: " + ("A" if even.get("A", 0) >= even.get("B", 0) else "B")


def rewritten_store(root) -> tuple:
    """(tokenizer dir, store): 40 documents rewritten by ``rlpt rewrite`` against a loopback
    teacher, N = 8, sequence 32."""
    tok = make_tokenizer_dir(root / "tok")
    corpus = make_corpus(root / "c.jsonl", 40, bad_lines=False)
    with LoopbackServer(responder=teacher) as rewriter:
        assert rlpt(["rewrite", "--corpus", str(corpus), "--tokenizer", str(tok), "--out", str(root / "store"),
                     "--endpoint", rewriter.base_url, "--model", "rewriter", "--suffix-length", "8",
                     "--seq-length", "32", "--min-prefix", "4", "--no-progress"]) == 0
    return tok, root / "store"


def _store_and_overrides(tmp_path, judge_url: str) -> list[str]:
    tok, _ = rewritten_store(tmp_path)
    return ["rlpt.data.source=store", f"rlpt.data.stores=[{tmp_path / 'store'}]", f"rlpt.data.tokenizer={tok}",
            f"rlpt.judge.endpoints=[{judge_url}]", "rlpt.judge.model=judge", "rlpt.candidates.num_rollouts=3",
            "rlpt.candidates.rewrite=true", "model.vocab_size=256", "tokenizer.vocab_size=202",
            "model.seq_length=32", "train.micro_batch_size=12", "train.global_batch_size=24"]


def test_pretrain_with_rollouts_and_a_judge_server(tmp_path):
    with LoopbackServer(responder=quality_judge, max_lifetime_s=300) as judge:
        overrides = _store_and_overrides(tmp_path, judge.base_url) + ["train.train_iters=4",
                                                                      "checkpoint.save_interval=4"]
        (records,) = run_distributed(store_case, 1, tmp_path / "w", str(tmp_path), overrides)
        judged = judge.total
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert judged >= 4 * 8 * 6  # at least 6 comparisons per pool of 4+ candidates, 8 pools, 4 steps
    for r in records:
        assert r["num_pairs"] > 0 and r["unjudged_pool_rate"] == 0.0
        assert 0.0 <= r["rollout_chosen_rate"] <= 1.0 and r["judge_wait_s"] >= 0.0
        assert r["judge_calls_per_prefix"] >= 6 and r["judge_failures"] == 0
        assert all(0.0 <= r[f"score_quality_{k}"] <= 1.0 for k in ("original", "rewrite", "rollout"))
    # one verdict cache per data-parallel rank, written by the rank that talks to the judge
    ckpt = tmp_path / "run" / "ckpt"
    assert (ckpt / "rlpt_judge_cache.dp000.sqlite").exists() and not (ckpt / "rlpt_judge_cache.sqlite").exists()


# wall-clock measurements (and the cache hit rate, which a resumed run raises) differ by design
TIMING = ("judge_wait_s", "judge_cache_hit_rate_so_far", "rollout_s", "judge_s")


# Dr. GRPO instead of DPO: every rollout a row (LM row + 3 rollouts per pool: 16 rows per
# micro-batch of 4 pools), trained against its rollout-time log-probs.
RULE_OVERRIDES = {
    "dpo": [],
    "grpo": ["rlpt.loss.selection=grpo", "rlpt.loss.dpo.start=0", "rlpt.loss.grpo.start=1.0",
             "train.micro_batch_size=16", "train.global_batch_size=32"],
}


@pytest.mark.parametrize("rule", list(RULE_OVERRIDES))
def test_resume_with_candidates_in_flight_is_exact(tmp_path, rule):
    """staleness 1: at every checkpoint the next step's rollouts (sampled by the previous policy)
    are in flight; they are saved with the checkpoint and their verdicts come from the cache."""
    with LoopbackServer(responder=quality_judge, max_lifetime_s=300) as judge:
        overrides = _store_and_overrides(tmp_path, judge.base_url) + RULE_OVERRIDES[rule]
        (res,) = run_distributed(resume_case, 1, tmp_path / "w", str(tmp_path), overrides, 4, 2)
    assert (tmp_path / "resumed" / "ckpt" / "iter_0000002" / "train_dataloader_dprank000.pt").exists()
    straight, resumed = res["straight"], res["first"] + res["second"]
    assert [r["step"] for r in resumed] == [0, 1, 2, 3]
    for want, got in zip(straight, resumed):
        assert {k: v for k, v in got.items() if k not in TIMING} == \
            {k: v for k, v in want.items() if k not in TIMING}, want["step"]
    for name, weight in res["straight_weights"].items():
        assert torch.equal(weight, res["resumed_weights"][name]), name
    if rule == "grpo":  # the GRPO term really trained, on stale (previous-policy) rollouts
        assert all(r["num_grpo_tokens"] > 0 and r["term_grpo"] != 0 and "num_pairs" not in r for r in straight)
        assert any(r["grpo_clip_fraction"] > 0 or r["grpo_loss"] != 0 for r in straight)
