"""``rlpt train --dry-run``'s workload block: :func:`format_plan` of a :class:`WorkloadPlan`."""

from __future__ import annotations

from rlpt_plugin.plan import CALLS_PER_COMPARISON, ROUND_ROBIN, WorkloadPlan


def _n(x: int) -> str:
    return f"{x:,}"


def format_plan(p: WorkloadPlan) -> str:
    """A terminal block: one aligned line per figure, assumptions named."""
    inp = p.inputs
    g, s = inp.groups_per_step, inp.seq_length
    lines: list[tuple[str, str]] = [("prefixes (global)", _n(g))]
    if inp.dp_size is not None:
        d = inp.dp_size
        lines.append((f"per data-parallel rank (DP={d})",
                      f"{_n(g // d)} prefixes, {_n(p.rollout_tokens // d)} rollout tokens, "
                      f"{_n(p.judge_calls // d)} judge calls"))
    if p.pool_size:
        kinds = [k for k, on in (("original", inp.original), ("rewrite", inp.rewrite)) if on]
        if inp.pool_rollouts:
            kinds.append(f"{inp.pool_rollouts} rollouts")
        note = " (rewrite counted for every prefix)" if inp.rewrite else ""
        lines.append(("pool per prefix", f"{p.pool_size} candidates: {' + '.join(kinds)}{note}"))
    else:
        lines.append(("pool per prefix", "none (no RL terms: next-token loss only)"))
    job = f" + {_n(inp.job_sequences)} job data" if inp.job_sequences else ""
    if inp.think_sequences:
        job += f" + {_n(inp.think_sequences)} think data"
    lines.append(("rows trained", f"<= {_n(p.rows)} ({_n(p.lm_rows)} LM{job} + <= {_n(p.rl_rows)} RL) x {_n(s)} "
                                  f"= <= {_n(p.unpacked_tokens_trained)} token positions"))
    if p.tokens_trained != p.unpacked_tokens_trained:
        lines.append(("prefix-shared rows", f"one row per prefix: <= {_n(p.tokens_trained)} token positions "
                                            "(if the attention path applies the mask; else unpacked)"))
    if inp.global_batch_size is not None:
        slots = inp.global_batch_size
        verdict = "fits" if p.rows <= slots else "DOES NOT FIT: raise global_batch_size or lower groups"
        lines.append(("row slots (global batch)", f"{_n(slots)} x {_n(s)} = {_n(slots * s)} positions; {verdict}"))
    if p.rollouts:
        how = "shared per prefix" if inp.share_prefill else "per rollout"
        each = (f"({_n(inp.suffix_length)} + {_n(inp.thinking_budget)} thought)" if inp.thinking_budget
                else _n(inp.suffix_length))
        lines.append(("rollouts", f"{_n(p.rollouts)} x {each} = {_n(p.rollout_tokens)} tokens "
                                  f"sampled; prefill <= {_n(p.prefill_tokens)} tokens ({how})"))
    else:
        lines.append(("rollouts", "none"))
    if p.judge_calls:
        per_axis = " + ".join(f"{a.name} {_n(a.per_step)}" for a in p.axes if a.per_step)
        lines.append((f"judge calls ({inp.judge})", f"{_n(p.judge_calls)} = {per_axis}"))
        q = p.axis("quality")
        if q.per_step:
            orders = CALLS_PER_COMPARISON[inp.position]
            lines.append(("quality per prefix", f"{_n(p.comparisons_per_prefix)} comparisons ({inp.schedule}) x "
                                                f"{orders} order(s) x {inp.samples} sample(s) = {_n(q.per_prefix)}"))
        cacheable = p.judge_calls - p.policy_dependent_calls
        lines.append(("policy-dependent calls", f"{_n(p.policy_dependent_calls)} (the other {_n(cacheable)} "
                                                "judge only original/rewrite: cacheable)"))
        lines.append(("judge rate needed", f"{p.calls_per_s:,.1f} calls/s at {inp.step_time_s:g} s per step"))
        if inp.schedule != ROUND_ROBIN:
            lines.append(("vs round robin", f"{_n(p.round_robin_calls)} calls ({p.round_robin_calls_per_s:,.1f}/s); "
                                            f"{inp.schedule} saves {_n(p.saved_calls)} ({p.saved_pct:.1f}%)"))
    else:
        lines.append(("judge calls", "none"))
    width = max(len(label) for label, _ in lines)
    body = [f"  {label.ljust(width)}  {value}" for label, value in lines]
    head = f"workload per step (assumed step time {inp.step_time_s:g} s; upper bounds):"
    foot = ("  assumptions: full-length prefixes (S + 1 - N tokens), every rollout N tokens; "
            "no retries, identical pairs or cache hits")
    return "\n".join([head, *body, foot])
