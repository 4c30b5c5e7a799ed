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
happens inside the forward step. When the judge raises, or gives no verdicts within
``judge_timeout_s``, the first rank says so in the broadcast and EVERY rank of the group raises
:class:`JudgeFailure` with the reason, instead of the others waiting in the collective.
``close()`` stops the background loop and closes the judge (client and cache).

Thinking rollouts (``thinking``, RL mid-training): each rollout samples a thought and then its
answer (rlpt_plugin/rl/thinking.py); the pool keeps what is trained (thought + answer, the rest
of the sample dropped with its log-probs) and the judge sees the answer only. The collected
step logs the thoughts' mean length and the share closed within the budget.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from concurrent.futures import Future, TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

import torch

from rlpt_plugin.judge.pools import FAILURE_REASONS, JudgePool, Verdicts
from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.candidates.reference import score_continuations
from rlpt_plugin.megatron.candidates.rollout import RolloutSpec, generate_rollouts
from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group, pool_candidates
from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind
from rlpt_plugin.rl.thinking import ThinkingSpec, answer, cut, read

Window = tuple[Sequence[int], Sequence[int], Sequence[int] | None]  # prefix, original, rewrite


class JudgeFailure(RuntimeError):
    """The judge could not serve the run: raised on every rank, with the reason."""


class PoolJudge(Protocol):
    axes: tuple[str, ...]

    async def judge(self, pools: Sequence[JudgePool]) -> Verdicts:
        """Verdicts for the pools, in order."""


@dataclass
class StageStats:
    judge_wait_s: list[float] = field(default_factory=list)
    rollout_s: list[float] = field(default_factory=list)
    rollout_tokens: list[int] = field(default_factory=list)  # tokens each launch pushed through the model
    rollout_cpu_s: list[float] = field(default_factory=list)  # this thread's CPU seconds per launch
    judge_s: list[float] = field(default_factory=list)  # seconds each step's verdicts took (background)
    unjudged_pools: int = 0
    last: dict[str, tuple[float, float]] = field(default_factory=dict)
    """The last collected step's metrics as (sum, count), same keys on every rank."""
    recent_errors: list[str] = field(default_factory=list)
    """The latest distinct failure reasons (judging ranks only), newest last."""

    def note_errors(self, errors: Sequence[Sequence[str]], keep: int = 5) -> None:
        for pool in errors:
            for e in pool:
                if e in self.recent_errors:
                    self.recent_errors.remove(e)
                self.recent_errors.append(e)
        del self.recent_errors[:-keep]


class _BackgroundLoop:
    """An asyncio loop on a daemon thread: judge requests stay in flight while the step trains."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="rlpt-judge", daemon=True)
        self.thread.start()

    def submit(self, coro) -> Future:  # noqa: ANN001
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def close(self, final=None, timeout_s: float = 30.0) -> None:  # noqa: ANN001
        """Run ``final`` (a coroutine, e.g. closing the client) on the loop, then stop the loop
        and join its thread; tasks still in flight are cancelled."""
        if final is not None:
            try:
                self.submit(final).result(timeout=timeout_s)
            except Exception:  # noqa: BLE001 - closing must not mask the error that got us here
                pass

        def stop() -> None:
            for task in asyncio.all_tasks(self.loop):
                task.cancel()
            self.loop.stop()

        self.loop.call_soon_threadsafe(stop)
        self.thread.join(timeout=timeout_s)
        if not self.thread.is_alive():
            self.loop.close()


class CandidateStage:
    def __init__(self, *, window_fn: Callable[[int], Window], model: torch.nn.Module,
                 rollout: RolloutSpec, pool: PoolSpec, judge: PoolJudge,
                 decode: Callable[[Sequence[int]], str], groups_per_step: int, staleness: int = 1,
                 judge_timeout_s: float = 3600.0, score_shape: tuple[int, int] | None = None,
                 thinking: ThinkingSpec | None = None):
        """score_shape: (seq_length, micro_batch_size) to record the rollout-time log-probs of the
        original and rewrite candidates too (the rollouts record theirs while sampling); None
        leaves them unscored (then the trainer scores at step start). thinking: rollouts are
        thought + answer (module docstring); ``rollout.max_new_tokens`` must be its budget + N."""
        if staleness < 0:
            raise ValueError(f"`staleness` must be >= 0, but is {staleness}")
        if thinking is not None and rollout.max_new_tokens != thinking.max_new_tokens:
            raise ValueError(f"thinking rollouts sample budget + N = {thinking.max_new_tokens} tokens, but the "
                             f"rollout spec samples {rollout.max_new_tokens}")
        self.thinking = thinking
        self.window_fn, self.model, self.rollout, self.pool = window_fn, model, rollout, pool
        self.judge, self.decode = judge, decode
        self.groups_per_step, self.staleness, self.judge_timeout_s = groups_per_step, staleness, judge_timeout_s
        self.stats = StageStats()
        self.score_shape = score_shape
        self._pending: dict[int, tuple[list[PoolInput], Future | None]] = {}
        self._loop: _BackgroundLoop | None = None
        self._closed = False

    def group_ids(self, step: int) -> range:
        return parallel.dp_share(step, self.groups_per_step)

    def launch(self, step: int) -> None:
        """Rollouts for ``step`` now (collective over TP/PP); its verdicts in the background."""
        if step in self._pending:
            return
        ids = list(self.group_ids(step))
        windows = [self.window_fn(i) for i in ids]
        began, cpu_began = time.perf_counter(), time.thread_time()
        if self.pool.rollouts:
            out = generate_rollouts(self.model, [w[0] for w in windows], self.rollout, step=step)
            tokens, logps_all = out.tokens, out.logps
            if self.thinking is not None:
                tokens, logps_all = self._cut(tokens, logps_all)
            self.stats.rollout_tokens.append(out.forward_tokens)
        else:  # a corpus-only pool (original and/or rewrite): nothing to sample
            tokens, logps_all = [[] for _ in ids], [[] for _ in ids]
            self.stats.rollout_tokens.append(0)
        self.stats.rollout_s.append(time.perf_counter() - began)
        self.stats.rollout_cpu_s.append(time.thread_time() - cpu_began)
        inputs = [PoolInput(group_id=gid, prefix=w[0], original=w[1], rewrite=w[2], rollouts=rolls,
                            rollout_logps=logps)
                  for gid, w, rolls, logps in zip(ids, windows, tokens, logps_all)]
        if self.score_shape is not None:
            inputs = self._score_corpus_candidates(inputs)
        future = None
        if parallel.is_model_parallel_first():
            if self._loop is None:
                self._loop = _BackgroundLoop()
            future = self._loop.submit(self._timed_judge(inputs))
        self._pending[step] = (inputs, future)

    def _cut(self, tokens: list[list[list[int]]], logps: list[list[list[float]]]) -> tuple[list, list]:
        """Each thinking rollout cut to its thought and answer (rlpt_plugin/rl/thinking.py)."""
        cut_tokens, cut_logps = [], []
        for rolls, lps in zip(tokens, logps):
            pieces = [cut(t, lp, self.thinking) for t, lp in zip(rolls, lps)]
            cut_tokens.append([p[0] for p in pieces])
            cut_logps.append([p[1] for p in pieces])
        return cut_tokens, cut_logps

    def _thought_metrics(self, inputs: Sequence[PoolInput]) -> dict[str, tuple[float, float]]:
        shapes = [read(r, self.thinking) for item in inputs for r in item.rollouts]
        n = float(len(shapes))
        return {"thought_tokens": (float(sum(s.thought for s in shapes)), n),
                "thought_closed": (float(sum(s.closed for s in shapes)), n)}

    def _score_corpus_candidates(self, inputs: list[PoolInput]) -> list[PoolInput]:
        """Original and rewrite log-probs under the policy that sampled the rollouts: one row per
        corpus candidate, truncated exactly as training truncates it, through the pipeline."""
        seq_length, micro_batch_size = self.score_shape
        wanted = [(g, name, cand) for g, item in enumerate(inputs)
                  for name, cand in (("original", item.original), ("rewrite", item.rewrite))
                  if cand is not None and len(cand) and (name == "original" and self.pool.original
                                                         or name == "rewrite" and self.pool.rewrite)]
        if not wanted:
            return inputs
        logps = score_continuations(self.model, [(inputs[g].prefix, cand) for g, _, cand in wanted],
                                    seq_length=seq_length, micro_batch_size=micro_batch_size)
        found = {(g, name): lp for (g, name, _), lp in zip(wanted, logps)}
        return [dataclasses.replace(item, original_logps=found.get((g, "original")),
                                    rewrite_logps=found.get((g, "rewrite")))
                for g, item in enumerate(inputs)]

    def failure_examples(self) -> list[str]:
        """The latest distinct judge failure reasons of this model-parallel group (collective:
        the judging rank's list on every rank)."""
        return parallel.mp_broadcast_object_from_first(list(self.stats.recent_errors))

    def close(self) -> None:
        """Stop the judge loop and close the judge (its client and cache); idempotent."""
        if self._closed:
            return
        self._closed = True
        loop, self._loop = self._loop, None
        for _, future in self._pending.values():
            if future is not None:
                future.cancel()
        aclose = getattr(self.judge, "aclose", None)
        if loop is not None:
            loop.close(aclose() if aclose is not None else None)
        elif aclose is not None:
            asyncio.run(aclose())

    def state_dict(self) -> dict:
        """The pools in flight (already sampled, maybe not yet judged), by step.

        Rollouts of a future step were sampled by an earlier policy and cannot be regenerated
        after a restart, so they go into the checkpoint; their verdicts are asked again on
        resume and come from the verdict cache.
        """
        return {"pending": {step: [dataclasses.asdict(i) for i in inputs]
                            for step, (inputs, _) in self._pending.items()}}

    def load_state_dict(self, state: dict) -> None:
        self._pending.clear()
        for step, items in sorted(state["pending"].items()):
            inputs = [PoolInput(**item) for item in items]
            future = None
            if parallel.is_model_parallel_first():
                if self._loop is None:
                    self._loop = _BackgroundLoop()
                future = self._loop.submit(self._timed_judge(inputs))
            self._pending[int(step)] = (inputs, future)

    async def _timed_judge(self, inputs: list[PoolInput]) -> Verdicts:
        began = time.perf_counter()
        verdicts = await self.judge.judge([self._judge_pool(i) for i in inputs])
        self.stats.judge_s.append(time.perf_counter() - began)
        return verdicts

    def _judge_pool(self, item: PoolInput) -> JudgePool:
        cands, kinds, _ = pool_candidates(item, self.pool)
        if self.thinking is not None:  # the judge compares answers: a rollout's thought is its own
            cands = [answer(c, self.thinking) if k is CandidateKind.ROLLOUT else c for c, k in zip(cands, kinds)]
        return JudgePool(prefix=self.decode(item.prefix), reference=self.decode(item.original),
                         candidates=tuple(self.decode(c) for c in cands), kinds=tuple(kinds))

    def collect(self, step: int) -> list[CandidateGroup]:
        """Step ``step``'s scored groups (launches it first when it is not in flight)."""
        self.launch(step)
        inputs, future = self._pending.pop(step)
        width = max(len(pool_candidates(i, self.pool)[0]) for i in inputs)
        # Row g: the pool's scores, NaN-padded; an unjudged pool is all NaN.
        axes = tuple(self.judge.axes)
        # [pool, candidate, channel]: channel 0 the reward, then one per axis; NaN = not judged.
        values = torch.full((len(inputs), width, 1 + len(axes)), float("nan"), dtype=torch.float64)
        # wait (s), judge calls, failed attempts, cache hit rate, failed (1.0: see the message),
        # then the failed attempts by reason
        totals = torch.zeros(5 + len(FAILURE_REASONS), dtype=torch.float64)
        failure = ""
        if future is not None:
            began = time.perf_counter()
            try:
                verdicts: Verdicts = future.result(timeout=self.judge_timeout_s)
            except FutureTimeout:
                future.cancel()
                failure = (f"the judge gave no verdicts for step {step} within {self.judge_timeout_s:g} s "
                           "(rlpt.judge.verdict_timeout_s); is the judge service up and keeping pace?")
            except Exception as err:  # noqa: BLE001 - carried to every rank below
                failure = f"the judge failed on step {step}'s pools: {type(err).__name__}: {err}"
            totals[0] = time.perf_counter() - began
        if failure:
            totals[4] = 1.0
        elif future is not None:
            totals[1], totals[2] = float(sum(verdicts.calls)), float(sum(verdicts.failures))
            totals[3] = verdicts.cache_hit_rate
            for r, reason in enumerate(FAILURE_REASONS):
                totals[5 + r] = float(verdicts.reasons.get(reason, 0.0))
            self.stats.note_errors(verdicts.errors)
            for g, score in enumerate(verdicts.scores):
                if score is None:
                    continue
                values[g, : len(score), 0] = torch.tensor(score, dtype=torch.float64)
                per_axis = verdicts.per_axis[g] if g < len(verdicts.per_axis) else {}
                for a, axis in enumerate(axes):
                    if axis in per_axis:
                        values[g, : len(per_axis[axis]), 1 + a] = torch.tensor(per_axis[axis], dtype=torch.float64)
        device = next(self.model.parameters()).device
        values = parallel.mp_broadcast_from_first(values.to(device)).cpu()
        totals = parallel.mp_broadcast_from_first(totals.to(device)).cpu()
        if totals[4]:  # every rank of the group stops, with the first rank's reason
            raise JudgeFailure(parallel.mp_broadcast_object_from_first(failure))
        self.stats.judge_wait_s.append(float(totals[0]))
        groups = []
        metrics = {f"score_{axis}_{kind}": (0.0, 0.0) for axis in axes for kind in self.pool.kinds()}
        for g, item in enumerate(inputs):
            cands, kinds, _ = pool_candidates(item, self.pool)
            row = values[g, : len(cands), 0]
            judged = not bool(torch.isnan(row).any())
            self.stats.unjudged_pools += int(not judged)
            groups.append(build_group(item, self.pool, row.tolist() if judged else None))
            for a, axis in enumerate(axes):
                for c, kind in enumerate(kinds):
                    v = float(values[g, c, 1 + a])
                    if judged and v == v:  # not NaN
                        total, count = metrics[f"score_{axis}_{kind}"]
                        metrics[f"score_{axis}_{kind}"] = (total + v, count + 1.0)
        metrics["judge_calls_per_prefix"] = (float(totals[1]), float(len(inputs)))
        metrics["judge_failures"] = (float(totals[2]), 1.0)
        for r, reason in enumerate(FAILURE_REASONS):
            metrics[f"judge_{reason}"] = (float(totals[5 + r]), 1.0)
        metrics["judge_cache_hit_rate_so_far"] = (float(totals[3]), 1.0)  # cumulative: the judge's whole run
        metrics["candidate_staleness"] = (float(self.staleness), 1.0)  # steps since sampled
        if self.thinking is not None:
            metrics.update(self._thought_metrics(inputs))
        self.stats.last = metrics
        for ahead in range(step + 1, step + 1 + self.staleness):
            self.launch(ahead)
        return groups
