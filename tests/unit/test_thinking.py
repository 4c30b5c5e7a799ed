"""Thinking rollouts: where the thought ends, what is trained, what the judge sees."""

from __future__ import annotations

import random

import pytest

from rlpt_plugin.rl.thinking import ThinkingSpec, answer, cut, read

OPEN, CLOSE = (7,), (8,)
SPEC = ThinkingSpec(open_ids=OPEN, close_ids=CLOSE, budget=6, answer_length=3)


def test_a_closed_thought_keeps_the_thought_and_n_answer_tokens():
    tokens = [7, 1, 2, 8, 4, 5, 6, 9, 9]
    kept, logps, shape = cut(tokens, [float(-i) for i in range(9)], SPEC)
    assert kept == [7, 1, 2, 8, 4, 5, 6] and logps == [0.0, -1.0, -2.0, -3.0, -4.0, -5.0, -6.0]
    assert shape.closed and shape.thought == 4 and answer(kept, SPEC) == [4, 5, 6] == answer(tokens, SPEC)


def test_no_thought_is_a_plain_rollout_of_n_tokens():
    tokens = [4, 5, 6, 7, 8, 1]
    kept, _, shape = cut(tokens, [0.0] * 6, SPEC)
    assert kept == [4, 5, 6] and shape.thought == 0 and not shape.closed and answer(kept, SPEC) == [4, 5, 6]


def test_a_thought_past_the_budget_keeps_the_budget_and_has_no_answer():
    tokens = [7, 1, 2, 3, 4, 5, 8, 6, 6]  # closes at index 6: one token past the budget
    kept, _, shape = cut(tokens, [0.0] * 9, SPEC)
    assert kept == tokens[:6] and shape.thought == 6 and not shape.closed and answer(kept, SPEC) == []
    exactly = [7, 1, 2, 3, 4, 8, 6, 6, 6]  # the close is the budget's last token
    assert read(exactly, SPEC).closed and answer(exactly, SPEC) == [6, 6, 6]


def test_a_rollout_that_ended_early_keeps_what_it_has():
    assert cut([7, 1, 8, 2], [0.0] * 4, SPEC)[0] == [7, 1, 8, 2]
    assert answer([7, 1, 8], SPEC) == [] and read([7, 1, 8], SPEC).closed
    assert cut([], [], SPEC)[0] == []


def test_multi_token_delimiters_match_exactly():
    spec = ThinkingSpec(open_ids=(1, 2), close_ids=(3, 4), budget=8, answer_length=2)
    assert read([1, 2, 5, 3, 5, 3, 4, 9, 9, 9], spec).thought == 7
    assert read([1, 5, 3, 4, 9], spec).thought == 0  # half an opening is no thought


def test_reading_a_cut_candidate_again_gives_the_same_shape():
    rng = random.Random(0)
    for _ in range(500):
        tokens = [rng.choice([1, 2, 7, 8]) for _ in range(rng.randint(0, SPEC.max_new_tokens))]
        kept, _, shape = cut(tokens, [0.0] * len(tokens), SPEC)
        assert read(kept, SPEC) == shape and answer(kept, SPEC) == answer(tokens, SPEC)
        assert len(kept) <= SPEC.max_new_tokens and len(answer(kept, SPEC)) <= SPEC.answer_length


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="at least one token"):
        ThinkingSpec(open_ids=(), close_ids=CLOSE, budget=4, answer_length=1)
    with pytest.raises(ValueError, match="must differ"):
        ThinkingSpec(open_ids=OPEN, close_ids=OPEN, budget=4, answer_length=1)
    with pytest.raises(ValueError, match="budget"):
        ThinkingSpec(open_ids=OPEN, close_ids=CLOSE, budget=1, answer_length=1)
    with pytest.raises(ValueError, match="log-probs"):
        cut([1, 2], [0.0], SPEC)
