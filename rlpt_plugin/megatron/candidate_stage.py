"""The in-loop candidate stage: windows -> rollouts from the live policy -> judge -> groups.

Timeline at the start of step t (the Bridge callback drives it):
1. ``collect(t)``: wait for step t's verdicts (the wait is measured), share them over the
   model-parallel group, and turn each pool into a scored :class:`CandidateGroup`.
2. ``launch(t + staleness)``: sample K rollouts per prefix with the current policy (a collective
   over TP and PP, outside the training schedule) and hand the pools to the judge, which runs on a
   background event loop while step t trains. With ``staleness = 0`` a step is launched and
   collected at once.
Only the first rank of each model-parallel group talks to the judge; every rank of the group
holds the same rollouts (the sampler broadcasts them), so one verdict serves all. Judging never
happens inside the forward step.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from rlpt_plugin.judge.judge import JudgePool
from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.rollout import RolloutSpec, generate_rollouts
from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group, pool_candidates
from rlpt_plugin.rl.pool import CandidateGroup

Window = tuple[Sequence[int], Sequence[int], Sequence[int] | None]  # prefix, original, rewrite


class PoolJudge(Protocol):
    async def judge(self, pools: Sequence[JudgePool]) -> list[list[float] | None]:
        """Scores per candidate, or None for a pool that could not be judged."""


@dataclass
class StageStats:
    judge_wait_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    unjudged_pools: int = 0


class _BackgroundLoop:
    """An asyncio loop on a daemon thread: judge requests stay in flight while the step trains."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rlpt-judge", daemon=True)
        self.thread.start()

    def submit(self, coro) -> Future:  # noqa: ANN001
        return asyncio.run_coroutine_threadsafe(coro, self.loop)


class CandidateStage:
    def __init__(self, *, window_fn: Callable[[int], Window], model: torch.nn.Module,
                 rollout: RolloutSpec, pool: PoolSpec, judge: PoolJudge,
                 decode: Callable[[Sequence[int]], str], groups_per_step: int, staleness: int = 1,
                 judge_timeout_s: float = 3600.0):
        if staleness < 0:
            raise ValueError(f"`staleness` must be >= 0, but is {staleness}")
        self.window_fn, self.model, self.rollout, self.pool = window_fn, model, rollout, pool
        self.judge, self.decode = judge, decode
        self.groups_per_step, self.staleness, self.judge_timeout_s = groups_per_step, staleness, judge_timeout_s
        self.stats = StageStats()
        self._pending: dict[int, tuple[list[PoolInput], Future | None]] = {}
        self._loop: _BackgroundLoop | None = None

    def group_ids(self, step: int) -> range:
        lay = parallel.layout()
        per_rank = self.groups_per_step // lay.dp_size
        first = step * self.groups_per_step + lay.dp_rank * per_rank
        return range(first, first + per_rank)

    def launch(self, step: int) -> None:
        """Rollouts for ``step`` now (collective over TP/PP); its verdicts in the background."""
        if step in self._pending:
            return
        ids = list(self.group_ids(step))
        windows = [self.window_fn(i) for i in ids]
        began = time.perf_counter()
        out = generate_rollouts(self.model, [w[0] for w in windows], self.rollout, step=step)
        self.stats.rollout_s.append(time.perf_counter() - began)
        inputs = [PoolInput(group_id=gid, prefix=w[0], original=w[1], rewrite=w[2], rollouts=rolls,
                            rollout_logps=logps)
                  for gid, w, rolls, logps in zip(ids, windows, out.tokens, out.logps)]
        future = None
        if parallel.is_model_parallel_first():
            if self._loop is None:
                self._loop = _BackgroundLoop()
            future = self._loop.submit(self.judge.judge([self._judge_pool(i) for i in inputs]))
        self._pending[step] = (inputs, future)

    def _judge_pool(self, item: PoolInput) -> JudgePool:
        cands, kinds, _ = pool_candidates(item, self.pool)
        return JudgePool(prefix=self.decode(item.prefix), reference=self.decode(item.original),
                         candidates=tuple(self.decode(c) for c in cands), kinds=tuple(kinds))

    def collect(self, step: int) -> list[CandidateGroup]:
        """Step ``step``'s scored groups (launches it first when it is not in flight)."""
        self.launch(step)
        inputs, future = self._pending.pop(step)
        width = max(len(pool_candidates(i, self.pool)[0]) for i in inputs)
        # Row g: the pool's scores, NaN-padded; an unjudged pool is all NaN.
        # The last row carries the judging rank's measured wait to the whole group.
        scores = torch.full((len(inputs) + 1, width), float("nan"), dtype=torch.float64)
        if future is not None:
            began = time.perf_counter()
            verdicts = future.result(timeout=self.judge_timeout_s)
            scores[-1, 0] = time.perf_counter() - began
            for g, verdict in enumerate(verdicts):
                if verdict is not None:
                    scores[g, : len(verdict)] = torch.tensor(verdict, dtype=torch.float64)
        device = next(self.model.parameters()).device
        scores = parallel.mp_broadcast_from_first(scores.to(device)).cpu()
        self.stats.judge_wait_s.append(float(scores[-1, 0]))
        groups = []
        for g, item in enumerate(inputs):
            n = len(pool_candidates(item, self.pool)[0])
            row = scores[g, :n]
            judged = not bool(torch.isnan(row).any())
            self.stats.unjudged_pools += int(not judged)
            groups.append(build_group(item, self.pool, row.tolist() if judged else None))
        for ahead in range(step + 1, step + 1 + self.staleness):
            self.launch(ahead)
        return groups
