"""Thinking rollouts through the candidate stage: each rollout is cut to its thought and answer,
the judge sees the answers only, the pool trains what was kept, and the step logs the thoughts.

The sampler is replaced by a scripted one (the real sampler is tested in test_rollout.py), so
the thought shapes are known: closed within the budget, never opened, and never closed."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import pytest

from tests.distributed.harness import run_distributed

pytestmark = pytest.mark.distributed

OPEN, CLOSE, BUDGET, N = 3, 4, 5, 3
# Per prefix: a closed thought (3 thought tokens + answer + 2 unused), no thought, an unclosed one.
SCRIPT = [[OPEN, 10, CLOSE, 20, 21, 22, 23, 24], [20, 21, 22, 23, 24, 25, 26, 27],
          [OPEN, 10, 11, 12, 13, 14, 15, 16]]


class RecordingJudge:
    axes = ("similarity",)

    def __init__(self) -> None:
        self.pools: list[Any] = []

    async def judge(self, pools: Sequence[Any]):
        from rlpt_plugin.judge.pools import Verdicts

        await asyncio.sleep(0)
        self.pools.extend(pools)
        scores = [[float(c == p.reference) for c in p.candidates] for p in pools]
        return Verdicts(scores=scores, per_axis=[{"similarity": s} for s in scores],
                        calls=[len(p.candidates) for p in pools], failures=[0] * len(pools))


def thinking_case(rank: int, world_size: int) -> dict[str, Any]:
    import torch

    from rlpt_plugin.megatron.candidates import candidate_stage
    from rlpt_plugin.megatron.candidates.candidate_stage import CandidateStage
    from rlpt_plugin.megatron.candidates.rollout import Rollouts, RolloutSpec
    from rlpt_plugin.rl.candidates import PoolSpec
    from rlpt_plugin.rl.thinking import ThinkingSpec
    from tests.distributed.tiny_gpt import VOCAB, Layout, build_model

    Layout(1, 1).init()
    model = build_model(weight_seed=0)
    seen: list[int] = []

    def scripted(model: torch.nn.Module, prefixes: Sequence[Sequence[int]], spec: RolloutSpec, *, step: int) -> Rollouts:
        seen.append(spec.max_new_tokens)
        tokens = [[list(t) for t in SCRIPT] for _ in prefixes]
        logps = [[[-(i + 1.0)] * len(t) for i, t in enumerate(SCRIPT)] for _ in prefixes]
        return Rollouts(tokens=tokens, logps=logps, forward_tokens=0)

    candidate_stage.generate_rollouts = scripted
    thinking = ThinkingSpec(open_ids=(OPEN,), close_ids=(CLOSE,), budget=BUDGET, answer_length=N)
    judge = RecordingJudge()
    stage = CandidateStage(window_fn=lambda gid: ([5 + gid, 6], [20, 21, 22], None), model=model,
                           rollout=RolloutSpec(num_samples=3, max_new_tokens=BUDGET + N, vocab_size=VOCAB - 4),
                           pool=PoolSpec(original=False, rollouts=True), judge=judge,
                           decode=lambda ids: " ".join(str(int(t)) for t in ids), groups_per_step=2,
                           staleness=0, thinking=thinking)
    groups = stage.collect(0)
    stage.close()
    mismatch = None
    try:
        CandidateStage(window_fn=lambda gid: ([1], [1], None), model=model,
                       rollout=RolloutSpec(num_samples=1, max_new_tokens=N, vocab_size=VOCAB - 4),
                       pool=PoolSpec(), judge=judge, decode=str, groups_per_step=1, thinking=thinking)
    except ValueError as err:
        mismatch = str(err)
    return {"sampled": seen, "candidates": [g.candidates for g in groups], "scores": [g.scores for g in groups],
            "ref_logps": [g.ref_logps for g in groups], "judged": [p.candidates for p in judge.pools],
            "metrics": dict(stage.stats.last), "mismatch": mismatch}


def test_thinking_rollouts_are_cut_and_judged_by_their_answers(tmp_path):
    (got,) = run_distributed(thinking_case, 1, tmp_path)
    assert got["sampled"] == [BUDGET + N]
    kept = ((OPEN, 10, CLOSE, 20, 21, 22), (20, 21, 22), (OPEN, 10, 11, 12, 13))
    assert got["candidates"] == [kept, kept]
    assert got["ref_logps"][0] == ((-1.0,) * 6, (-2.0,) * 3, (-3.0,) * 5)  # the kept tokens' log-probs
    assert got["judged"] == [("20 21 22", "20 21 22", ""), ("20 21 22", "20 21 22", "")]  # answers only
    assert got["scores"] == [(1.0, 1.0, 0.0), (1.0, 1.0, 0.0)]
    m = got["metrics"]
    assert m["thought_tokens"] == (2 * (3 + 0 + 5), 6.0) and m["thought_closed"] == (2.0, 6.0)
    assert "budget + N = 8" in got["mismatch"]
