"""Thinking rollouts (RL mid-training): a thought, then the predicted suffix.

A thinking rollout is sampled for up to ``budget + N`` tokens. It is read as

* ``<think> ... </think>`` closed within the first ``budget`` tokens, then the ANSWER: the next
  ``N`` tokens (or fewer, when the rollout ended). The candidate is the thought and the answer;
  the judge sees the answer only (the similarity axis compares it with the true suffix);
* no thought (the rollout does not open with ``<think>``): the first ``N`` tokens are the answer
  and the whole candidate, as a plain rollout;
* a thought not closed within the budget: the candidate is its first ``budget`` tokens and the
  answer is empty (nothing to compare: the judge's reward for it is 0, so a policy learns to
  close its thoughts in time).

Everything the policy sampled up to the cut is trained (thought tokens included: Dr. GRPO's
token-level loss runs over the whole candidate); what comes after the cut was never used and is
dropped, with its log-probs. Delimiters are token sequences (a tokenizer may split ``<think>``
into several ids); they are matched exactly. Pure Python.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ThinkingSpec:
    """``open_ids`` / ``close_ids``: the delimiters' token ids; ``budget``: the most tokens a
    thought may take, delimiters included; ``answer_length``: N, the predicted suffix's length."""

    open_ids: tuple[int, ...]
    close_ids: tuple[int, ...]
    budget: int
    answer_length: int

    def __post_init__(self) -> None:
        if not self.open_ids or not self.close_ids:
            raise ValueError("ThinkingSpec: the thought delimiters must encode to at least one token each, "
                             f"but got open {list(self.open_ids)} and close {list(self.close_ids)}")
        if self.open_ids == self.close_ids:
            raise ValueError(f"ThinkingSpec: the opening and closing delimiters must differ, but both are "
                             f"{list(self.open_ids)}")
        if self.budget < len(self.open_ids) + len(self.close_ids):
            raise ValueError(f"ThinkingSpec: budget ({self.budget}) must hold at least the two delimiters "
                             f"({len(self.open_ids) + len(self.close_ids)} tokens)")
        if self.answer_length < 1:
            raise ValueError(f"ThinkingSpec: answer_length must be >= 1, but is {self.answer_length}")

    @property
    def max_new_tokens(self) -> int:
        """Tokens a thinking rollout may sample: the budget, then the answer."""
        return self.budget + self.answer_length


@dataclass(frozen=True)
class Thought:
    """One rollout read by :func:`read`: ``length`` tokens are kept (the candidate), of which
    the first ``thought`` are the thought (0 without one); ``closed``: the thought ended in time."""

    length: int
    thought: int
    closed: bool

    @property
    def answer(self) -> slice:
        return slice(self.thought, self.length)


def _find(tokens: Sequence[int], needle: tuple[int, ...], start: int, stop: int) -> int | None:
    """First index ``i`` in ``[start, stop - len(needle)]`` where ``needle`` occurs, or None."""
    n = len(needle)
    for i in range(start, stop - n + 1):
        if tuple(tokens[i:i + n]) == needle:
            return i
    return None


def read(tokens: Sequence[int], spec: ThinkingSpec) -> Thought:
    """Where the thought and the answer of a sampled rollout are (module docstring)."""
    n_open = len(spec.open_ids)
    if tuple(tokens[:n_open]) != spec.open_ids:
        return Thought(length=min(len(tokens), spec.answer_length), thought=0, closed=False)
    close = _find(tokens, spec.close_ids, n_open, min(len(tokens), spec.budget))
    if close is None:
        return Thought(length=min(len(tokens), spec.budget), thought=min(len(tokens), spec.budget), closed=False)
    end = close + len(spec.close_ids)
    return Thought(length=min(len(tokens), end + spec.answer_length), thought=end, closed=True)


def cut(tokens: Sequence[int], logps: Sequence[float], spec: ThinkingSpec) -> tuple[list[int], list[float], Thought]:
    """The candidate a rollout gives (its kept tokens and their log-probs) and how it reads."""
    if len(logps) != len(tokens):
        raise ValueError(f"a rollout has {len(tokens)} tokens but {len(logps)} log-probs")
    shape = read(tokens, spec)
    return list(tokens[:shape.length]), list(logps[:shape.length]), shape


def answer(tokens: Sequence[int], spec: ThinkingSpec) -> list[int]:
    """The tokens of a candidate the judge compares with the true suffix (thought removed)."""
    shape = read(tokens, spec)
    return list(tokens[shape.answer]) if shape.closed or shape.thought == 0 else []
