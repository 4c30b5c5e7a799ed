"""The per-step workload of a run, worked out from its settings alone (``rlpt train --dry-run``).

Pure Python: no torch, no megatron (a job's ``rlpt`` config section becomes these inputs in
rlpt_plugin/plan_config.py), so the plan can be printed before anything heavy loads::

    p = plan(WorkloadInputs(groups_per_step=8, seq_length=2048, suffix_length=128, num_rollouts=16))
    print(format_plan(p))  # rlpt_plugin/plan_report.py

What one optimizer step costs, for ``G = groups_per_step`` prefixes (global, all data-parallel
ranks), ``N = suffix_length``, ``K = num_rollouts``, ``S = seq_length``:

* Pool: ``n = original + rewrite + K`` candidates per prefix (``m`` = original + rewrite of them,
  the corpus candidates). The rewrite is counted as present for EVERY prefix (a window whose
  store has no usable rewrite simply has one candidate fewer) and every rollout as N tokens
  (an immediate EOS drops a rollout), so every figure below is an upper bound.
* Rows trained (rlpt_plugin/rl/packing.py): one LM row per prefix (prefix + original) when
  ``lm_on_window`` (whether or not the original is also a candidate), plus one row per
  distinct selected candidate not already in a row: DPO up to 2 (chosen, rejected; under the
  dpo rule the RF-NLL target IS the chosen row), RF-NLL alone up to 1, Dr. GRPO one per
  rollout (K), none for a single-candidate pool. Every row is counted as ``S``
  positions: rows are padded to ``S``, and store windows cut the prefix to ``S + 1 - N`` tokens,
  so a full-length window fills its row. Plus one LM row per sequence of the job's own data
  (``rlpt.data.job_sequences_per_step``), each exactly ``S`` positions.
* Prefix-shared rows (``rlpt.data.prefix_sharing``, on unless ``unpacked``): the same rows
  packed as ONE row per prefix, ``S + (r - 1) * N`` positions for ``r`` trained candidates
  (``tokens_trained``); the row budget (``rows``, checked against the micro-batch size) stays
  the unpacked count, which bounds what a shared micro-batch holds.
* Rollouts (in-loop pools only): ``G * K`` sequences of ``N`` sampled tokens; prefill of at most
  ``S + 1 - N`` prefix tokens per prefix with shared prefill, per rollout without.
* Judge calls (in-loop pools only; rlpt_plugin/judge/judge.py): quality makes
  ``max_comparisons(schedule, n)`` comparisons per pool, each shown once (position ``random``)
  or in both orders (``both``: 2 calls), each asked ``samples`` times; safety and factuality
  ask ``n * samples`` per pool. An axis of weight 0 is off. Not counted: retries, identical-text
  pairs (never sent), cache hits.
* Policy-dependent calls: those that involve a rollout. The verdicts on the original and the
  rewrite alone (pointwise, and quality pairs between the two) do not depend on the policy and
  can be cached or precomputed offline. The tournament's pairing depends on the outcomes, so with
  rollouts in the pool all its comparisons count as policy-dependent.
* Rate: calls per step / ``step_time_s``, the trainer's step time the judge must keep up with
  (a stated assumption, not a measurement; judging overlaps training with
  ``rlpt.candidates.staleness >= 1``). Compared with round robin, the paper's schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from rlpt_plugin.judge.pools import POSITIONS
from rlpt_plugin.judge.schedules import PIVOT, ROUND_ROBIN, SCHEDULES, TOURNAMENT, max_comparisons

DEFAULT_STEP_TIME_S = 10.0
# Judge requests per quality comparison for each position-bias control (judge.py: "both" shows
# the pair in both orders, "random" once in a content-seeded order).
CALLS_PER_COMPARISON: dict[str, int] = {"random": 1, "both": 2}
AXIS_NAMES: tuple[str, ...] = ("quality", "safety", "factuality", "similarity")


@dataclass(frozen=True, kw_only=True)
class WorkloadInputs:
    """Everything the per-step workload depends on; see the module docstring for the model."""

    groups_per_step: int
    """Prefixes per optimizer step over ALL data-parallel ranks (rlpt.data.groups_per_step)."""
    seq_length: int
    """Training sequence length S (model.seq_length)."""
    suffix_length: int
    """Tokens N per candidate (the store's suffix length); 1 <= N <= S."""
    num_rollouts: int = 4
    """K rollouts per prefix."""
    thinking_budget: int = 0
    """Thought tokens a rollout may write before its N-token answer (rlpt.candidates.thinking_budget):
    a thinking rollout samples up to budget + N tokens and trains what it kept."""
    original: bool = True
    rewrite: bool = False
    rollouts: bool = True
    quality: float = 1.0
    safety: float = 0.0
    factuality: float = 0.0
    similarity: float = 0.0
    schedule: str = ROUND_ROBIN
    samples: int = 1
    """Judge samples per judgment."""
    position: str = "random"
    lm_on_window: bool = True
    job_sequences: int = 0
    """Sequences of the job's own data per step (rlpt.data.job_sequences_per_step): LM rows."""
    think_sequences: int = 0
    """Chunks of the think stores per step (rlpt.data.think_sequences_per_step): LM rows."""
    dpo: bool = True
    """DPO rows (chosen + rejected) are trained."""
    rf_nll: bool = False
    """RF-NLL rows (the best candidate) are trained."""
    grpo: bool = False
    """Dr. GRPO rows (every rollout of the pool) are trained."""
    in_loop: bool = True
    """Pools come from rollouts + judge in the loop (rlpt.data.source=store). False: ready-made
    scored groups (synthetic): RL rows, but no generation and no judge calls."""
    share_prefill: bool = True
    shared_rows: bool = False
    """Each prefix's trained rows packed as ONE prefix-shared row (rlpt.data.prefix_sharing):
    ``S + (r - 1) * N`` positions for ``r`` trained candidates instead of ``r * S``."""
    step_time_s: float = DEFAULT_STEP_TIME_S
    """The trainer's step time the judge must keep up with (an assumption)."""
    dp_size: int | None = None
    """Data-parallel size, for the per-rank share (must divide groups_per_step)."""
    global_batch_size: int | None = None
    """Row slots per step (train.global_batch_size), to check the rows fit."""
    judge: str = "openai"
    """Label of the judge backend, for the printout only."""

    def __post_init__(self) -> None:
        for name in ("groups_per_step", "seq_length", "suffix_length", "samples"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("num_rollouts", self.num_rollouts, minimum=0)
        _check_int("thinking_budget", self.thinking_budget, minimum=0)
        _check_int("job_sequences", self.job_sequences, minimum=0)
        _check_int("think_sequences", self.think_sequences, minimum=0)
        for name in ("dp_size", "global_batch_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        for name in ("original", "rewrite", "rollouts", "lm_on_window", "dpo", "rf_nll", "grpo", "in_loop",
                     "share_prefill", "shared_rows"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        for name in AXIS_NAMES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} (axis weight) must be a finite number >= 0, got {v!r}")
        if not any(getattr(self, a) for a in AXIS_NAMES):
            raise ValueError(f"{', '.join(AXIS_NAMES)}: at least one axis weight must be > 0, got all 0")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {list(POSITIONS)}, got {self.position!r}")
        st = self.step_time_s
        if isinstance(st, bool) or not isinstance(st, (int, float)) or not math.isfinite(st) or st <= 0:
            raise ValueError(f"step_time_s must be a finite number > 0, got {st!r}")
        if self.suffix_length + self.thinking_budget > self.seq_length:
            raise ValueError(f"thinking_budget + suffix_length must be <= seq_length ({self.seq_length}) so a "
                             f"thinking rollout's row keeps a prefix token, got {self.thinking_budget} + "
                             f"{self.suffix_length}")
        if self.suffix_length > self.seq_length:
            raise ValueError(f"suffix_length must be <= seq_length ({self.seq_length}) so a row keeps "
                             f"a prefix token, got {self.suffix_length}")
        if self.dp_size is not None and self.groups_per_step % self.dp_size:
            raise ValueError(f"dp_size must divide groups_per_step ({self.groups_per_step}), got {self.dp_size}")
        if self.dp_size is not None and self.job_sequences % self.dp_size:
            raise ValueError(f"dp_size must divide job_sequences ({self.job_sequences}), got {self.dp_size}")
        if self.has_rl and self.pool_size == 0:
            raise ValueError("original, rewrite, rollouts: the pool is empty (enable original, rewrite, "
                             "or rollouts with num_rollouts >= 1)")
        if not self.has_rl and not self.lm_on_window and not self.job_sequences:
            raise ValueError("lm_on_window is False and neither dpo nor rf_nll is on: nothing to train")

    @property
    def has_rl(self) -> bool:
        return self.dpo or self.rf_nll or self.grpo

    @property
    def pool_rollouts(self) -> int:
        """Rollouts in each pool (0 when rollouts are off the pool)."""
        return self.num_rollouts if self.rollouts else 0

    @property
    def pool_corpus(self) -> int:
        """Corpus candidates (original, rewrite) in each pool."""
        return int(self.original) + int(self.rewrite)

    @property
    def pool_size(self) -> int:
        return self.pool_corpus + self.pool_rollouts


def _check_int(name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@dataclass(frozen=True)
class AxisCalls:
    """Judge calls of one axis per step; ``per_prefix`` is per pool."""

    name: str
    per_prefix: int
    per_step: int
    policy_dependent: int
    """Calls per step that involve a rollout (the rest could be cached or precomputed)."""


@dataclass(frozen=True)
class WorkloadPlan:
    """One optimizer step's workload (upper bounds; see the module docstring)."""

    inputs: WorkloadInputs
    pool_size: int
    """Candidates per prefix (0 when no pools are built: no RL terms)."""
    lm_rows: int
    """LM rows of the groups (prefix + original suffix)."""
    job_rows: int
    """LM rows of the job's own data."""
    rl_rows: int
    """At most; fewer when the original is selected (its LM row is shared) or pools tie."""
    tokens_trained: int
    """Row positions trained: (lm_rows + job_rows + rl_rows) * seq_length unpacked; with shared
    rows, one row of S + (r - 1) * N positions per prefix (r = its trained candidates) plus the
    job rows."""
    unpacked_tokens_trained: int
    """(lm_rows + job_rows + rl_rows) * seq_length: the same rows unpacked."""
    rollouts: int
    rollout_tokens: int
    prefill_tokens: int
    comparisons_per_prefix: int
    axes: tuple[AxisCalls, ...]
    """quality, safety, factuality, similarity, in that order (0 calls when off)."""
    round_robin_calls: int
    """Judge calls per step with the same settings and schedule=round_robin."""

    @property
    def rows(self) -> int:
        return self.lm_rows + self.job_rows + self.rl_rows

    @property
    def judge_calls(self) -> int:
        return sum(a.per_step for a in self.axes)

    @property
    def policy_dependent_calls(self) -> int:
        return sum(a.policy_dependent for a in self.axes)

    @property
    def calls_per_s(self) -> float:
        return self.judge_calls / self.inputs.step_time_s

    @property
    def round_robin_calls_per_s(self) -> float:
        return self.round_robin_calls / self.inputs.step_time_s

    @property
    def saved_calls(self) -> int:
        """Calls per step the chosen schedule saves against round robin."""
        return self.round_robin_calls - self.judge_calls

    @property
    def saved_pct(self) -> float:
        return 100.0 * self.saved_calls / self.round_robin_calls if self.round_robin_calls else 0.0

    def axis(self, name: str) -> AxisCalls:
        for a in self.axes:
            if a.name == name:
                return a
        raise ValueError(f"axis must be one of {list(AXIS_NAMES)}, got {name!r}")


def _quality_comparisons(schedule: str, n: int, corpus: int) -> tuple[int, int]:
    """(comparisons per pool, those that involve a rollout) for ``n`` candidates of which the
    first ``corpus`` are the original / rewrite (pool order: original, rewrite, rollouts)."""
    total = max_comparisons(schedule, n)
    if n == corpus:  # no rollouts: nothing depends on the policy
        return total, 0
    if schedule == ROUND_ROBIN:
        return total, total - corpus * (corpus - 1) // 2
    if schedule == PIVOT:  # the pivot is the original, else candidate 0 (the rewrite if any)
        return total, total - max(0, corpus - 1)
    assert schedule == TOURNAMENT  # outcome-dependent pairing: count every comparison
    return total, total


def _judge_calls(inp: WorkloadInputs, schedule: str) -> tuple[int, tuple[AxisCalls, ...]]:
    """(comparisons per prefix, calls per axis) of one step under ``schedule``."""
    g, n, r = inp.groups_per_step, inp.pool_size, inp.pool_rollouts
    judged = inp.in_loop and inp.has_rl
    comparisons, axes = 0, []
    for name in AXIS_NAMES:
        on = judged and getattr(inp, name) > 0
        if not on:
            axes.append(AxisCalls(name, 0, 0, 0))
        elif name == "quality":
            comparisons, dependent = _quality_comparisons(schedule, n, inp.pool_corpus)
            per = CALLS_PER_COMPARISON[inp.position] * inp.samples
            axes.append(AxisCalls(name, comparisons * per, g * comparisons * per, g * dependent * per))
        else:
            axes.append(AxisCalls(name, n * inp.samples, g * n * inp.samples, g * r * inp.samples))
    return comparisons, tuple(axes)


def plan(inputs: WorkloadInputs) -> WorkloadPlan:
    """The workload of one optimizer step (see the module docstring for the model)."""
    inp = inputs
    g, s, n_tok = inp.groups_per_step, inp.seq_length, inp.suffix_length
    rollout_tok = n_tok + inp.thinking_budget  # a rollout candidate's most tokens
    pool = inp.pool_size if inp.has_rl else 0
    has_lm = inp.lm_on_window
    lm_rows = g if has_lm else 0
    rl_per_prefix = 0
    if inp.has_rl and pool >= 2:
        wanted = 2 if inp.dpo else 1
        # the original's LM row doubles as its RL row when it is a candidate
        rl_per_prefix = min(wanted, pool - (1 if has_lm and inp.original else 0))
        if inp.grpo:  # every rollout is a row of its own (never the original's LM row)
            rl_per_prefix = inp.pool_rollouts
    rl_rows = g * rl_per_prefix
    extra_rows = inp.job_sequences + inp.think_sequences  # LM-only rows beside the groups
    unpacked = (lm_rows + extra_rows + rl_rows) * s
    per_prefix = (1 if has_lm else 0) + rl_per_prefix
    tokens_trained = unpacked
    if inp.shared_rows and rl_per_prefix and per_prefix > 1:
        tokens_trained = g * (s + (per_prefix - 1) * rollout_tok) + extra_rows * s
    generating = inp.has_rl and inp.in_loop and inp.pool_rollouts > 0
    rollouts = g * inp.pool_rollouts if generating else 0
    max_prefix = s + 1 - (rollout_tok if generating else n_tok)
    prefill = 0
    if generating:
        prefill = g * max_prefix * (1 if inp.share_prefill else inp.pool_rollouts)
    comparisons, axes = _judge_calls(inp, inp.schedule)
    _, rr_axes = _judge_calls(inp, ROUND_ROBIN)
    return WorkloadPlan(
        inputs=inp, pool_size=pool, lm_rows=lm_rows, job_rows=extra_rows, rl_rows=rl_rows,
        tokens_trained=tokens_trained, unpacked_tokens_trained=unpacked,
        rollouts=rollouts, rollout_tokens=rollouts * rollout_tok, prefill_tokens=prefill,
        comparisons_per_prefix=comparisons, axes=axes,
        round_robin_calls=sum(a.per_step for a in rr_axes),
    )


def max_rows_per_microbatch(p: WorkloadPlan, *, dp_size: int, num_microbatches: int) -> int:
    """The most rows one micro-batch of one data-parallel rank can need: groups and job rows go
    to micro-batches in near-equal contiguous blocks (rlpt_plugin/rl/packing.py: block_bounds)."""
    g, j = p.inputs.groups_per_step // dp_size, p.job_rows // dp_size
    per_group = (p.lm_rows + p.rl_rows) // p.inputs.groups_per_step
    return -(-g // num_microbatches) * per_group + -(-j // num_microbatches)
