"""Builds each training step's micro-batches for this rank, outside the schedule.

Per step: take this data-parallel rank's share of the step's candidate groups, select
chosen/rejected/best, pack into ``num_microbatches`` fixed-shape micro-batches, fill reference
log-probs (a forward-only pass over every pipeline stage), and sum the loss denominators over
the data-parallel group. Then the forward step pops one micro-batch per call.

``prepare(step)`` must run on every rank at step start (the Bridge callback does it) whenever
reference log-probs need a model pass; without one, a step is also built lazily on first use.
The source keeps no state beyond the next step index, which the host's iteration counter
restores on resume: a step's content is a pure function of its index and the layout-free
global group ids, so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable, Iterator

import torch

from rlpt_plugin.megatron import parallel
from rlpt_plugin.judge.watchdog import UnjudgedWatchdog, stop_message
from rlpt_plugin.megatron.candidates.candidate_stage import CandidateStage, JudgeFailure
from rlpt_plugin.megatron.candidates.reference import ReferenceScorer
from rlpt_plugin.rl.packing import PackSpec, Row, pack_step
from rlpt_plugin.rl.pool import RULE_GRPO, SKIP_ALL_TIED, CandidateGroup, SelectionStats, select_all
from rlpt_plugin.rl.losses import Denominators
from rlpt_plugin.rl.step import StepMicroBatch, local_denominators, step_extras

GroupFn = Callable[[int], CandidateGroup]
RowFn = Callable[[int], Row]


class StepSource(Iterator[StepMicroBatch]):
    """Iterator of :class:`StepMicroBatch` for this rank, one step at a time.

    groups_per_step: GLOBAL number of candidate groups per optimizer step (all DP ranks).
    lm_rows / lm_rows_per_step: LM-only rows outside the groups (the job's own pretraining
    data), ``lm_rows(i)`` for the GLOBAL sequence index i; step s trains sequences
    ``[s * lm_rows_per_step, (s + 1) * lm_rows_per_step)``, shared over DP like the groups.
    think_rows / think_rows_per_step: the same for the think stores' rows (thinking SFT,
    rlpt_plugin/megatron/data/think_dataset.py), packed after the job's rows.
    """

    def __init__(self, group_fn: GroupFn | None = None, *, groups_per_step: int, spec: PackSpec,
                 rule: str = "dpo", fallback: str = "drop", reference: ReferenceScorer | None = None,
                 start_step: int = 0, vocab_size: int | None = None, stage: CandidateStage | None = None,
                 lm_rows: RowFn | None = None, lm_rows_per_step: int = 0,
                 think_rows: RowFn | None = None, think_rows_per_step: int = 0,
                 watchdog: UnjudgedWatchdog | None = None):
        """vocab_size: the model's vocabulary; token ids at or past it are an error.
        stage: the in-loop candidate stage; without one, ``group_fn`` gives ready groups.
        watchdog: stops the run (:class:`JudgeFailure` on every rank) when too many of the
        stage's pools go unjudged."""
        if watchdog is not None and stage is None:
            raise ValueError("StepSource: a watchdog needs the candidate stage (ready-made groups are "
                             "never judged in the loop)")
        if (lm_rows is None) != (lm_rows_per_step == 0) or lm_rows_per_step < 0:
            raise ValueError(f"StepSource: lm_rows_per_step ({lm_rows_per_step}) must be > 0 exactly "
                             "when an lm_rows function is given")
        if (think_rows is None) != (think_rows_per_step == 0) or think_rows_per_step < 0:
            raise ValueError(f"StepSource: think_rows_per_step ({think_rows_per_step}) must be > 0 exactly "
                             "when a think_rows function is given")
        if (group_fn is None) == (stage is None):
            raise ValueError("StepSource needs exactly one of group_fn (ready groups) and stage")
        if groups_per_step < 1:
            raise ValueError(f"groups_per_step must be >= 1, but is {groups_per_step} instead.")
        self.group_fn = group_fn
        self.groups_per_step = groups_per_step
        self.spec = spec
        self.rule = rule
        self.fallback = fallback
        self.reference = reference
        self.vocab_size = vocab_size
        self.stage = stage
        self.lm_rows = lm_rows
        self.lm_rows_per_step = lm_rows_per_step
        self.think_rows = think_rows
        self.think_rows_per_step = think_rows_per_step
        self.watchdog = watchdog
        self.next_step = start_step
        self.last_stats: SelectionStats | None = None
        self.last_denominators: Denominators | None = None
        self.last_shape: tuple[int, int] | None = None
        """[B, S] of the prepared step's micro-batches (all alike; wider than seq_length with
        prefix-shared rows)."""
        self.last_cost: dict[str, float] = {}
        """Seconds of the prepared step's phases (wall clock, and ``*_cpu_s``: this thread's CPU
        time, which a shared machine's load does not inflate) and the positions each model pass
        pushes (bench/step_cost.py); timings stay out of the logged metrics, which resume tests
        compare."""
        self._queue: deque[StepMicroBatch] = deque()

    def group_ids(self, step: int) -> range:
        return parallel.dp_share(step, self.groups_per_step)

    def prepare(self, step: int | None = None) -> None:
        """Build step ``step`` (default: the next one). Collective over DP and, with a
        reference, over the pipeline: call it on every rank."""
        step = self.next_step if step is None else step
        began, cpu_began = time.perf_counter(), time.thread_time()
        if self._queue:
            raise RuntimeError(f"step {step} prepared while {len(self._queue)} micro-batches of "
                               "the previous step are unconsumed")
        failure: JudgeFailure | None = None
        if self.stage is not None:
            try:
                groups = self.stage.collect(step)
            except JudgeFailure as err:  # this replica's judge: stop every replica with it
                failure, groups = err, []
        else:
            groups = [self.group_fn(i) for i in self.group_ids(step)]
        batches: list = []
        selections: list = []
        lm_rows: list = []
        think: list = []
        pack_s = pack_cpu_s = reference_s = reference_cpu_s = 0.0
        if failure is None:
            selections = select_all(groups, rule=self.rule, fallback=self.fallback)
            lm_rows = [self.lm_rows(i) for i in parallel.dp_share(step, self.lm_rows_per_step)] \
                if self.lm_rows is not None else []
            if self.vocab_size is not None:
                self._check_lm_rows_vocab(lm_rows)
            think = [self.think_rows(i) for i in parallel.dp_share(step, self.think_rows_per_step)] \
                if self.think_rows is not None else []
            packed, cpu_packed = time.perf_counter(), time.thread_time()
            batches = pack_step(groups, selections, self.spec, lm_rows + think)
            if self.vocab_size is not None:
                self._check_vocab(batches)
            pack_s, pack_cpu_s = time.perf_counter() - packed, time.thread_time() - cpu_packed
            if self.reference is not None:  # a pass through this replica's pipeline only
                referenced, cpu_referenced = time.perf_counter(), time.thread_time()
                self.reference.fill(batches)
                reference_s, reference_cpu_s = time.perf_counter() - referenced, time.thread_time() - cpu_referenced
        local = local_denominators(batches)
        unjudged = float(sum(g.scores is None for g in groups))
        # The step's global counts, and whether any data-parallel replica's judge failed: every
        # rank learns it in the same collective, so all stop together instead of some waiting.
        summed = parallel.all_reduce_sum_over_dp(torch.tensor(
            [local.num_lm_tokens, local.num_pairs, local.num_rf_tokens, unjudged, float(len(groups)),
             float(failure is not None), local.num_grpo_tokens], dtype=torch.float64)).tolist()
        if summed[5]:
            raise failure or JudgeFailure(f"the judge failed on {int(summed[5])} other data-parallel "
                                          f"replica(s) at step {step}; their ranks report why")
        denominators = Denominators(*(float(v) for v in summed[:3]), num_grpo_tokens=float(summed[6]))
        if self.watchdog is not None and (share := self.watchdog.observe(summed[3], summed[4])) is not None:
            raise JudgeFailure(stop_message(share, self.watchdog, step, self.stage.failure_examples()))
        self.last_stats = SelectionStats.from_selections(zip(groups, selections))
        self.last_denominators = denominators
        metrics = self._step_metrics(groups, selections, self.last_stats)
        if lm_rows:  # the share of the LM term's tokens that came from the job's own data
            metrics["job_lm_token_share"] = (_lm_tokens(lm_rows), local.num_lm_tokens)
        if think:  # ... and from the think stores (original and thought tokens)
            metrics["think_lm_token_share"] = (_lm_tokens(think), local.num_lm_tokens)
        self._queue.extend(StepMicroBatch(mb, denominators, step, step_extras(metrics, i == 0))
                           for i, mb in enumerate(batches))
        self.last_shape = tuple(batches[0].tokens_BS.shape) if batches else None
        positions = sum(mb.tokens_BS.numel() for mb in batches)
        stats = self.stage.stats if self.stage is not None else None
        self.last_cost = {
            "prepare_cpu_s": time.thread_time() - cpu_began, "pack_cpu_s": pack_cpu_s,
            "reference_cpu_s": reference_cpu_s, "rollout_cpu_s": stats.rollout_cpu_s[-1] if stats else 0.0,
            "prepare_s": time.perf_counter() - began, "pack_s": pack_s, "reference_s": reference_s,
            "train_positions": positions, "reference_positions": positions if self.reference is not None else 0,
            "rollout_s": self.stage.stats.rollout_s[-1] if self.stage is not None else 0.0,
            "rollout_tokens": self.stage.stats.rollout_tokens[-1] if self.stage is not None else 0,
            "judge_wait_s": self.stage.stats.judge_wait_s[-1] if self.stage is not None else 0.0}
        self.next_step = step + 1

    def close(self) -> None:
        """Release the candidate stage's judge (thread, client, cache); idempotent."""
        if self.stage is not None:
            self.stage.close()

    def state_dict(self) -> dict:
        """What a resumed run needs beyond the step index (which the host restores)."""
        return {"stage": self.stage.state_dict() if self.stage is not None else None}

    def load_state_dict(self, state: dict) -> None:
        if self.stage is not None and state.get("stage") is not None:
            self.stage.load_state_dict(state["stage"])

    def _step_metrics(self, groups: list, selections: list, stats: SelectionStats) -> dict[str, tuple[float, float]]:
        """This rank's share of the step's data metrics, as (sum, count)."""
        metrics = {"unjudged_pool_rate": (float(sum(g.scores is None for g in groups)), float(len(groups)))}
        if self.rule == RULE_GRPO:  # no candidate is picked; the judged pools whose rollouts all tie
            judged = [s for g, s in zip(groups, selections) if g.scores is not None]
            metrics["grpo_tied_group_rate"] = (float(sum(s.skip_reason == SKIP_ALL_TIED for s in judged)),
                                               float(len(judged)))
        else:
            # the candidate the update moves towards (chosen, else best) is a rollout
            metrics["rollout_chosen_rate"] = (float(stats.rollout_targets), float(stats.num_targets))
        if self.stage is not None:  # seconds the trainer waited for this step's verdicts
            metrics["judge_wait_s"] = (self.stage.stats.judge_wait_s[-1], 1.0)
            metrics["rollout_s"] = (self.stage.stats.rollout_s[-1], 1.0)  # the latest launch
            # the latest verdicts' judging time, in the background (judging ranks only; 0 elsewhere)
            metrics["judge_s"] = (self.stage.stats.judge_s[-1] if self.stage.stats.judge_s else 0.0, 1.0)
            metrics.update(self.stage.stats.last)
        return metrics

    def _check_lm_rows_vocab(self, rows: list[Row]) -> None:
        for row in rows:
            top = max(row.tokens)
            if top >= self.vocab_size or min(row.tokens) < 0:
                raise ValueError(f"token id {top if top >= self.vocab_size else min(row.tokens)} in "
                                 f"sequence {row.group_id} of the job's own data is outside the model's "
                                 f"vocabulary of {self.vocab_size}: the job's data was tokenized with a "
                                 "different tokenizer than the model's")

    def _check_vocab(self, batches: list) -> None:
        for mb in batches:
            top = int(mb.tokens_BS.max())
            if top >= self.vocab_size:
                row = int((mb.tokens_BS >= self.vocab_size).any(dim=1).nonzero()[0, 0])
                raise ValueError(f"token id {top} in group {int(mb.group_ids_B[row])} is outside the "
                                 f"model's vocabulary of {self.vocab_size}: the tokenizer and "
                                 "model.vocab_size disagree")

    def __next__(self) -> StepMicroBatch:
        if not self._queue:
            if self.reference is not None:
                raise RuntimeError("StepSource.prepare() must run at step start when reference "
                                   "log-probs need a model pass (install the rlpt callback)")
            self.prepare()
        return self._queue.popleft()


def _lm_tokens(rows: list[Row]) -> float:
    """Label positions the LM term trains in ``rows``."""
    return float(sum(sum(r.lm_mask) if r.lm_mask is not None else len(r.tokens) - 1 for r in rows))
