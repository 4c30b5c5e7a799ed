"""The workload plan of a job's ``rlpt`` config section (rlpt_plugin/plan.py works it out):
which inputs the section gives, and which config path names each in an error."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from rlpt_plugin.plan import DEFAULT_STEP_TIME_S, WorkloadInputs, WorkloadPlan, plan

if TYPE_CHECKING:  # rlpt_plugin.config imports torch (through rlpt_plugin.rl.losses)
    from rlpt_plugin.config import RLPTConfig

# Config paths of the inputs plan_from_config reads from the rlpt section, to name them in errors.
_CONFIG_PATHS: dict[str, str] = {
    "groups_per_step": "rlpt.data.groups_per_step", "num_rollouts": "rlpt.candidates.num_rollouts",
    "thinking_budget": "rlpt.candidates.thinking_budget",
    "samples": "rlpt.judge.samples", "schedule": "rlpt.judge.schedule", "position": "rlpt.judge.position",
    "quality": "rlpt.judge.quality", "safety": "rlpt.judge.safety", "factuality": "rlpt.judge.factuality",
    "similarity": "rlpt.judge.similarity",
    "lm_on_window": "rlpt.data.lm_on_window", "job_sequences": "rlpt.data.job_sequences_per_step",
    "think_sequences": "rlpt.data.think_sequences_per_step",
}


def lm_rows_packed(rlpt: RLPTConfig) -> bool:
    """Whether each group gets its LM row: ``rlpt.data.lm_on_window`` and an LM weight that is
    non-zero at some step (rows the LM term would never train are not packed)."""
    lm = rlpt.loss.lm
    return bool(rlpt.data.lm_on_window and (lm.start or lm.end))


def plan_from_config(rlpt: RLPTConfig, *, seq_length: int, suffix_length: int | None = None,
                     step_time_s: float = DEFAULT_STEP_TIME_S, dp_size: int | None = None,
                     global_batch_size: int | None = None) -> WorkloadPlan:
    """The plan of a run with ``rlpt`` config section and the host's numbers.

    ``seq_length``: model.seq_length; ``suffix_length``: N of the stores (their manifest),
    required for ``rlpt.data.source=store``, else rlpt.data.synthetic.suffix_length;
    ``dp_size`` / ``global_batch_size``: optional, for the per-rank share and the row check.
    Without RL terms (``rlpt.loss.has_rl_terms()`` False) no pool is built: no rollouts, no
    judge calls. The world judge ignores ``samples`` and ``position`` (one oracle call each).
    """
    loss, data, cand, judge = rlpt.loss, rlpt.data, rlpt.candidates, rlpt.judge
    rl = loss.has_rl_terms()
    dpo = rl and loss.selection == "dpo"  # as rlpt_plugin.megatron.host.bridge_host.pack_spec_flags
    rf_nll = rl and bool(loss.rf_nll.start or loss.rf_nll.end)
    grpo = rl and loss.selection == "grpo"
    store = data.source == "store"
    if store:
        if suffix_length is None:
            raise ValueError("suffix_length must be given (the stores' N) for rlpt.data.source=store, got None")
        pool: dict[str, Any] = dict(num_rollouts=cand.num_rollouts, original=cand.original, rewrite=cand.rewrite,
                                    rollouts=cand.rollouts, share_prefill=cand.share_prefill,
                                    thinking_budget=cand.thinking_budget)
    else:
        syn = data.synthetic
        suffix_length = syn.suffix_length if suffix_length is None else suffix_length
        pool = dict(num_rollouts=syn.num_rollouts, original=syn.include_original, rewrite=False, rollouts=True)
    world = judge.backend == "world"
    try:
        inputs = WorkloadInputs(
            groups_per_step=data.groups_per_step, seq_length=seq_length, suffix_length=suffix_length,
            schedule=judge.schedule, **judge.axis_weights(keep_zero=True),
            samples=1 if world else judge.samples, position="random" if world else judge.position,
            lm_on_window=lm_rows_packed(rlpt), job_sequences=data.job_sequences_per_step,
            think_sequences=data.think_sequences_per_step,
            dpo=dpo, rf_nll=rf_nll, grpo=grpo, in_loop=store, shared_rows=data.prefix_sharing != "unpacked",
            step_time_s=step_time_s, dp_size=dp_size, global_batch_size=global_batch_size,
            judge="world oracle" if world else "openai", **pool)
    except ValueError as err:
        paths = dict(_CONFIG_PATHS)
        if not store:
            paths["num_rollouts"] = "rlpt.data.synthetic.num_rollouts"
        name = re.match(r"\w+", str(err))
        if name is None or name.group() not in paths:
            raise
        raise ValueError(f"`{paths[name.group()]}`: {err}") from None
    return plan(inputs)
