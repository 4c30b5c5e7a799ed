"""``rlpt demo --task reasoning`` end to end at a smoke scale: every phase runs through the real
host (the think task with the world's annotator, thinking SFT, Dr. GRPO on thinking rollouts
with the similarity judge), each model is graded, and what the phases hand each other is right.
It asserts no margin: at this scale (100 start steps, 20 per phase) no model has learnt to
think yet; the evidence is the README's, from larger runs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.bridge
ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--task", "reasoning", "--entities", "40", "--start-steps", "100", "--steps", "20", "--rollouts", "4",
         "--groups-per-step", "8", "--no-progress"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reasoning") / "out"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-m", "rlpt_plugin.cli", "demo", "--out", str(out), *SMALL],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-4000:]
    return {"out": out, "stdout": done.stdout + done.stderr,
            "results": json.loads((out / "reasoning_results.json").read_text())}


def test_every_model_is_graded_and_the_table_printed(run):
    models = run["results"]["models"]
    assert set(models) == {"base", "ntp_raw", "sft_think", "sft_think_rlmt", "sft_think_more"}
    for m in models.values():
        assert 0.0 <= m["correct"] <= 1.0 and 0.0 <= m["thought"] <= 1.0 and m["heldout_nll"] > 0
        assert 0.0 <= m["recall_employer"] <= 1.0 and 0.0 <= m["recall_site"] <= 1.0
    assert 0.0 < run["results"]["majority_site_share"] <= 1.0
    for label in ("NTP (raw)", "SFT(think) + RLMT", "held-out two-hop prefixes: 80", "recall: employer",
                  "RLMT thinking length", "always answering the most frequent site of these prefixes"):
        assert label in run["stdout"], label


def test_the_phases_hand_each_other_the_right_data(run):
    from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
    from rlpt_plugin.megatron.data.think_store import ThinkStore
    from rlpt_plugin.world import WorldTokenizer, vocab

    out, tok = run["out"], WorldTokenizer(reasoning=True)
    sft, rl = ThinkStore(out / "think_sft"), ThinkStore(out / "think_rl")
    assert len(sft) > 0 and len(rl) > 0
    assert not {sft[i].doc_index for i in range(len(sft))} & {rl[i].doc_index for i in range(len(rl))}  # halves
    plain = RewrittenStore(out / "store")
    assert len(plain) > 0
    for i in range(len(plain)):  # the next-token data never states a two-hop fact
        text = tok.decode(plain[i].prefix.tolist() + plain[i].original.tolist())
        assert "commutes to" not in text and "travels to" not in text, text
    twin = ThinkStore(out / "think_sft_raw")  # NTP (raw)'s chunks: SFT(think)'s, thoughts removed
    assert len(twin) == len(sft)
    for i in range(len(sft)):
        assert twin[i].tokens.tolist() == sft[i].original.tolist() and twin[i].num_thought_tokens == 0
        assert (twin[i].doc_index, twin[i].chunk_index) == (sft[i].doc_index, sft[i].chunk_index)
    rlmt = RewrittenStore(out / "store_rlmt")
    assert len(rlmt) > 0
    for i in range(len(rlmt)):  # cut right before the site the thought explained
        w = rlmt[i]
        assert tok.decode(w.prefix.tolist()).endswith(("commutes to", "travels to"))
        assert tok.decode(w.original[:1].tolist()) in vocab.SITES
    metrics = [json.loads(line) for line in (out / "sft_think_rlmt" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 20 and all("thought_tokens" in m and "grpo_loss" in m for m in metrics)
    assert all(m.get("score_similarity_rollout", 0.0) >= 0.0 for m in metrics)
    assert len(run["results"]["thinking_curve"]) == 20
