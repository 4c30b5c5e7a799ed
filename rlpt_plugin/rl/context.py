"""The context a continuation is conditioned on, one rule everywhere.

A row of ``seq_length + 1`` tokens holds ``context + continuation``; the context is the END of
the prefix (the tokens nearest the continuation), cut from the left to what fits. Training rows
(rlpt_plugin/rl/packing.py), the frozen reference's and the rollout policy's log-prob passes
(rlpt_plugin/megatron/candidates/reference.py) and greedy evaluation (rlpt_plugin/megatron/eval/evaluate.py,
rlpt_plugin/megatron/eval/eval_job.py) all cut with :func:`row_context`, so a continuation is scored
and generated on exactly the context it is trained on. Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence


def row_context(prefix: Sequence[int], continuation_length: int, seq_length: int) -> tuple[int, ...]:
    """The last ``seq_length + 1 - continuation_length`` tokens of ``prefix`` (all of it when it
    is shorter; empty when the continuation alone fills the row)."""
    keep = max(0, min(len(prefix), seq_length + 1 - continuation_length))
    return tuple(prefix[len(prefix) - keep:])
