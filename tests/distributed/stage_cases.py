"""Spawned bodies: candidate stage -> judge -> packed DPO batch -> Megatron step."""

from __future__ import annotations

import asyncio
from typing import Any, Sequence

import torch
from megatron.core import parallel_state as ps
from megatron.core.num_microbatches_calculator import (
    destroy_num_microbatches_calculator,
    init_num_microbatches_calculator,
)
from megatron.core.pipeline_parallel import get_forward_backward_func

from rlpt_plugin.judge.pools import JudgePool, Verdicts
from rlpt_plugin.megatron.candidates.candidate_stage import CandidateStage
from rlpt_plugin.megatron.step.forward_step import RLPTForwardStep
from rlpt_plugin.megatron.candidates.reference import ReferenceScorer
from rlpt_plugin.megatron.candidates.rollout import RolloutSpec
from rlpt_plugin.megatron.step.step_source import StepSource
from rlpt_plugin.rl.candidates import PoolSpec
from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.packing import PackSpec
from rlpt_plugin.rl.synthetic import SyntheticGroups
from rlpt_plugin.rl.weights import MixedWeights
from tests.distributed.tiny_gpt import VOCAB, Layout, build_model

SOURCE = SyntheticGroups(vocab_size=VOCAB - 4, suffix_length=5, num_rollouts=1)


class EvenTokenJudge:
    """A deterministic judge over texts: score = fraction of even token ids; pools whose prefix
    starts with an id divisible by 7 'fail' (None), to exercise the unjudged path."""

    axes = ("quality",)

    def __init__(self) -> None:
        self.calls = 0

    async def judge(self, pools: Sequence[JudgePool]) -> Verdicts:
        await asyncio.sleep(0.01)
        self.calls += len(pools)
        out: list[list[float] | None] = []
        for pool in pools:
            if int(pool.prefix.split()[0]) % 7 == 0:
                out.append(None)
                continue
            out.append([sum(int(t) % 2 == 0 for t in c.split()) / max(1, len(c.split()))
                        for c in pool.candidates])
        return Verdicts(scores=out, per_axis=[{"quality": s} if s else {} for s in out],
                        calls=[len(p.candidates) for p in pools], failures=[int(s is None) for s in out])


def window(gid: int):
    g = SOURCE.group(gid)
    return list(g.prefix), list(g.candidates[0]), None


def stage_steps(case: dict[str, Any]) -> dict[str, Any]:
    Layout(case["tp"], case["pp"]).init()
    dp = ps.get_data_parallel_world_size()
    mbs, num_mb, seq, steps = 12, 2, 24, 3
    destroy_num_microbatches_calculator()
    init_num_microbatches_calculator(0, None, mbs * num_mb * dp, mbs, dp)
    model = build_model(weight_seed=0)
    judge = EvenTokenJudge()
    stage = CandidateStage(window_fn=window, model=model,
                           rollout=RolloutSpec(num_samples=3, max_new_tokens=5, vocab_size=VOCAB - 4, seed=5),
                           pool=PoolSpec(original=True, rollouts=True), judge=judge,
                           decode=lambda ids: " ".join(str(int(t)) for t in ids), groups_per_step=8,
                           staleness=case["staleness"], score_shape=(seq, mbs) if case.get("recorded") else None)
    # recorded: the rollout-time log-probs travel with the pools; else the policy at step start.
    source = StepSource(groups_per_step=8, stage=stage,
                        reference=None if case.get("recorded") else ReferenceScorer([model]),
                        spec=PackSpec(seq_length=seq, micro_batch_size=mbs, num_microbatches=num_mb,
                                      use_rf_nll=True, ref_from_rollout=bool(case.get("recorded"))),
                        vocab_size=VOCAB)
    forward_step = RLPTForwardStep(LossConfig(beta=0.5), MixedWeights.constant(lm=1.0, dpo=1.0, rf_nll=0.5))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    losses, rates, metrics = [], [], []
    for step in range(steps):
        source.prepare(step)
        model.zero_grad_buffer()
        optimizer.zero_grad()
        reports = get_forward_backward_func()(forward_step_func=forward_step, data_iterator=source,
                                              model=[model], num_microbatches=num_mb, seq_length=seq,
                                              micro_batch_size=mbs, forward_only=False)
        for p in model.parameters():
            p.grad = p.main_grad.clone()
        optimizer.step()
        rates.append(source.last_stats.rollout_chosen_rate)
        if ps.is_pipeline_last_stage():
            total = torch.stack([r["loss"] for r in reports]).sum(0)
            torch.distributed.all_reduce(total, group=ps.get_data_parallel_group())
            losses.append(float(total[0] / total[1]))
            extras = {k: torch.stack([r[k] for r in reports]).sum(0)
                      for k in ("rollout_chosen_rate", "judge_wait_s", "score_quality_original",
                                "score_quality_rollout", "judge_calls_per_prefix", "judge_failures")}
            metrics.append({k: float(v[0] / v[1]) for k, v in extras.items()})
    return {"case": case, "losses": losses, "rates": rates, "judge_calls": judge.calls,
            "waits": len(stage.stats.judge_wait_s), "unjudged": stage.stats.unjudged_pools,
            "metrics": metrics}


def run_stage_cases(rank: int, world_size: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [stage_steps(c) for c in cases]


class BrokenJudge:
    """Fails the way a real judge service does: ``raises`` (the client blows up), ``unparsable``
    (every answer unreadable: all pools unjudged, with the answers), ``slow`` (no verdict in time)."""

    axes = ("quality",)

    def __init__(self, how: str) -> None:
        self.how = how

    async def judge(self, pools: Sequence[JudgePool]) -> Verdicts:
        if self.how == "raises":
            raise ConnectionError("judge-0:8000 refused the connection")
        if self.how == "slow":
            await asyncio.sleep(30)
        return Verdicts(scores=[None] * len(pools), calls=[1] * len(pools), failures=[3] * len(pools),
                        errors=[("quality r1/0v1: no_verdict; answer: 'I think both are fine.'",)] * len(pools))


def failing_steps(case: dict[str, Any]) -> dict[str, Any]:
    """Runs steps against a broken judge; returns how (and at which step) this rank stopped."""
    from rlpt_plugin.judge.watchdog import UnjudgedWatchdog
    from rlpt_plugin.megatron.candidates.candidate_stage import JudgeFailure

    Layout(case["tp"], case["pp"]).init()
    dp = ps.get_data_parallel_world_size()
    destroy_num_microbatches_calculator()
    init_num_microbatches_calculator(0, None, 12 * dp, 12, dp)
    model = build_model(weight_seed=0)
    stage = CandidateStage(window_fn=window, model=model,
                           rollout=RolloutSpec(num_samples=2, max_new_tokens=5, vocab_size=VOCAB - 4, seed=5),
                           pool=PoolSpec(original=True, rollouts=True),
                           # one_replica: only data-parallel replica 1's judge is broken
                           judge=EvenTokenJudge() if case["how"] == "one_replica" and ps.get_data_parallel_rank() == 0
                           else BrokenJudge("raises" if case["how"] == "one_replica" else case["how"]),
                           decode=lambda ids: " ".join(str(int(t)) for t in ids), groups_per_step=4,
                           staleness=case["staleness"], judge_timeout_s=0.5)
    source = StepSource(groups_per_step=4, stage=stage, reference=ReferenceScorer([model]),
                        spec=PackSpec(seq_length=24, micro_batch_size=12, num_microbatches=1, use_rf_nll=True),
                        vocab_size=VOCAB, watchdog=UnjudgedWatchdog(max_share=0.5, window=2))
    stopped = {"step": None, "message": None}
    for step in range(4):
        try:
            source.prepare(step)
        except JudgeFailure as err:
            stopped = {"step": step, "message": str(err)}
            break
        source._queue.clear()  # the step's batches are not needed here
    source.close()
    stopped["loop_alive"] = stage._loop is not None
    return stopped


def run_failing_cases(rank: int, world_size: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [failing_steps(c) for c in cases]
