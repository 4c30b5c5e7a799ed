"""Rewriter: classification, cut to suffix_length, echo stripping, overlap, request building."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import pytest

from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus, SamplingParams
from rlpt_plugin.teacher.rewriter import (
    RewriteInput,
    Rewriter,
    RewriteStatus,
    bag_overlap,
    default_max_tokens,
    is_refusal,
    strip_echo,
)
from rlpt_plugin.teacher.templates import load_template, parse_template
from rlpt_plugin.types import Tokenizer


class WordTokenizer:
    """Whitespace tokenizer with a vocabulary that grows on demand (ids in first-seen order)."""

    name = "toy-words"
    fingerprint = "toy-words-v1"
    eod_id = 0

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {"<eod>": 0}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        return [self.vocab.setdefault(w, len(self.vocab)) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        inverse = {i: w for w, i in self.vocab.items()}
        return " ".join(inverse[i] for i in ids)


class ScriptedTeacher:
    """TeacherClient answering from a function of the request; records requests."""

    model_id = "scripted"

    def __init__(self, answer: Callable[[GenerationRequest], GenerationResult]) -> None:
        self.answer = answer
        self.requests: list[GenerationRequest] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.requests.extend(requests)
        return [self.answer(r) for r in requests]

    async def aclose(self) -> None:
        pass


PREFIX = "the old lighthouse keeper walked down to the"
ORIGINAL = "harbour every morning to count the boats"


def text_result(text: str, cached: bool = False) -> Callable[[GenerationRequest], GenerationResult]:
    return lambda r: GenerationResult(r.request_id, GenerationStatus.OK, text, "stop", None, 1, 0.01, cached)


def rewrite_one(answer: Callable[[GenerationRequest], GenerationResult], suffix_length: int = 7,
                original: str = ORIGINAL):  # fmt: skip
    tok = WordTokenizer()
    item = RewriteInput("w0", PREFIX, original, tuple(tok.encode(original)))
    teacher = ScriptedTeacher(answer)
    rw = Rewriter(teacher, tok, load_template("rewrite_v1"), suffix_length, SamplingParams(max_tokens=64))
    [out] = asyncio.run(rw.rewrite([item]))
    return out, tok, teacher


def test_toy_tokenizer_satisfies_protocol() -> None:
    assert isinstance(WordTokenizer(), Tokenizer)


def test_rewritten_is_cut_to_suffix_length_with_overlap() -> None:
    out, tok, teacher = rewrite_one(text_result(" harbour each morning to count the fishing boats and nets"), 5)
    assert out.status is RewriteStatus.REWRITTEN
    assert tok.decode(out.token_ids) == "harbour each morning to count"  # cut to 5, not 10
    # original[:5] = harbour every morning to count -> 4 of 5 tokens shared
    assert out.overlap == pytest.approx(4 / 5)
    assert (out.error, out.cached) == (None, False)
    req = teacher.requests[0]
    assert req.request_id == "w0"


def test_request_carries_template_render_and_params() -> None:
    _, _, teacher = rewrite_one(text_result("x"))
    req = teacher.requests[0]
    assert req.assistant_prefix == "keeper walked down to the"
    assert req.params == SamplingParams(max_tokens=64)
    assert ORIGINAL in req.messages[-1][1] and PREFIX in req.messages[-1][1]
    assert "about 7 words" in req.messages[-1][1]


def test_shorter_rewrite_is_kept_shorter_not_padded() -> None:
    out, tok, _ = rewrite_one(text_result(" harbour at dawn"))
    assert out.status is RewriteStatus.REWRITTEN
    assert tok.decode(out.token_ids) == "harbour at dawn"
    assert out.overlap == pytest.approx(1 / 7)  # 'harbour' shared, max(len)=7


def test_copied_when_teacher_keeps_the_suffix() -> None:
    out, _, _ = rewrite_one(text_result(" " + ORIGINAL + " and then went home"))  # cut -> identical
    assert out.status is RewriteStatus.COPIED and out.overlap == 1.0 and len(out.token_ids) == 7


def test_reordered_tokens_are_rewritten_with_full_bag_overlap() -> None:
    out, _, _ = rewrite_one(text_result("boats the count to morning every harbour"))
    assert out.status is RewriteStatus.REWRITTEN and out.overlap == 1.0  # bag, not positional


def test_echoed_prime_is_stripped() -> None:
    out, tok, _ = rewrite_one(text_result("keeper walked down  to\nthe harbour every morning to count the boats"))
    assert out.status is RewriteStatus.COPIED
    assert tok.decode(out.token_ids) == ORIGINAL


@pytest.mark.parametrize(
    "answer",
    ["I'm sorry, but I can't help with that.", "  As an AI language model, I ...", "i cannot continue this text",
     "\"I can’t help with this request\"", "keeper walked down to the I'm sorry, I won't"],
)  # fmt: skip
def test_refusals_have_no_tokens(answer: str) -> None:
    out, _, _ = rewrite_one(text_result(answer))
    assert out.status is RewriteStatus.REFUSED and out.token_ids == () and out.overlap == 0.0
    assert out.error is not None and out.error.startswith("teacher refused")


def test_refusal_words_later_in_text_are_not_a_refusal() -> None:
    out, _, _ = rewrite_one(text_result(" harbour, saying I cannot stay long"))
    assert out.status is RewriteStatus.REWRITTEN


@pytest.mark.parametrize("answer", ["", "   \n\t", "keeper walked down to the   "])
def test_empty_answers(answer: str) -> None:
    out, _, _ = rewrite_one(text_result(answer))
    assert out.status is RewriteStatus.EMPTY and out.token_ids == () and out.overlap == 0.0
    assert out.error is not None and "whitespace only" in out.error


def test_failed_carries_error() -> None:
    out, _, _ = rewrite_one(lambda r: GenerationResult.failure(r.request_id, "HTTP 503 (4 attempts): busy", 4, 2.0))
    assert (out.status, out.token_ids, out.error) == (RewriteStatus.FAILED, (), "HTTP 503 (4 attempts): busy")


def test_cached_flag_passes_through() -> None:
    out, _, _ = rewrite_one(text_result(" harbour", cached=True))
    assert out.cached is True


def test_batch_order_and_mixed_outcomes() -> None:
    tok = WordTokenizer()
    answers = {"a": " new words here", "b": "I'm sorry", "c": ""}
    teacher = ScriptedTeacher(lambda r: text_result(answers[r.request_id])(r))
    rw = Rewriter(teacher, tok, load_template("rewrite_v1"), 4, SamplingParams())
    items = [RewriteInput(w, PREFIX, ORIGINAL, tuple(tok.encode(ORIGINAL))) for w in ("c", "a", "b")]
    outs = asyncio.run(rw.rewrite(items))
    assert [(o.window_id, o.status.value) for o in outs] == [("c", "empty"), ("a", "rewritten"), ("b", "refused")]
    with pytest.raises(ValueError, match=r"items\[1\].window_id must be unique in a batch, got duplicate 'c'"):
        asyncio.run(rw.rewrite([items[0], items[0]]))


def test_helpers() -> None:
    assert bag_overlap([1, 1, 2], [1, 2, 2, 3]) == pytest.approx(2 / 4)
    assert bag_overlap([], []) == 0.0
    assert strip_echo("A  b\nc rest", "a b c") == "A  b\nc rest"  # case-sensitive: not an echo
    assert strip_echo("\"a b c rest", "x a b c") == "\"a b c rest"
    assert strip_echo(" a b c rest", "a b c") == " rest"
    assert is_refusal("Sorry, but I must decline") and not is_refusal("Sorrow filled the harbour")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"suffix_length": 0}, "suffix_length must be an int >= 1, got 0"),
        ({"params": {"temperature": 0}}, "params must be a SamplingParams, got dict"),
        ({"template": "rewrite_v1"}, "template must be a Template, got str"),
    ],
)
def test_rewriter_validation(kwargs: dict, match: str) -> None:
    args = {"client": ScriptedTeacher(text_result("")), "tokenizer": WordTokenizer(),
            "template": load_template("rewrite_v1"), "suffix_length": 4, "params": SamplingParams()}  # fmt: skip
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        Rewriter(**args)


def test_input_validation() -> None:
    with pytest.raises(ValueError, match=r"suffix_ids\[1\] must be a token id >= 0, got -2"):
        RewriteInput("w", "p", "s", (1, -2))
    with pytest.raises(ValueError, match="window_id must be a non-empty string"):
        RewriteInput("", "p", "s", ())


def test_completions_kind_sends_one_prompt_ending_before_the_prime() -> None:
    tok = WordTokenizer()
    item = RewriteInput("w0", PREFIX, ORIGINAL, tuple(tok.encode(ORIGINAL)))
    teacher = ScriptedTeacher(text_result(" harbour every morning"))
    rw = Rewriter(teacher, tok, load_template("rewrite_v1"), 7, SamplingParams(), kind="completions")
    [out] = asyncio.run(rw.rewrite([item]))
    req = teacher.requests[0]
    assert not req.is_chat and req.messages is None
    assert req.prompt.endswith("\n\n") and PREFIX in req.prompt and ORIGINAL in req.prompt
    assert req.assistant_prefix == "keeper walked down to the"  # appended to the prompt by the client
    assert out.status is RewriteStatus.REWRITTEN


def test_rewriter_kind_validation() -> None:
    args = {"client": ScriptedTeacher(text_result("")), "tokenizer": WordTokenizer(),
            "template": load_template("rewrite_v1"), "suffix_length": 4, "params": SamplingParams()}  # fmt: skip
    with pytest.raises(ValueError, match="kind must be 'chat', 'completions' or None, got 'embeddings'"):
        Rewriter(**args, kind="embeddings")
    completions = parse_template("version: c-v1\nkind: completions\n### prompt\n{prefix} {suffix} {num_words}\n", name="c")
    with pytest.raises(ValueError, match="kind is 'chat' but template 'c' is a completions template"):
        Rewriter(**(args | {"template": completions}), kind="chat")


@pytest.mark.parametrize(("n", "expected"), [(1, 9), (8, 16), (64, 72), (128, 144), (2048, 2304)])
def test_default_max_tokens_is_n_plus_a_margin(n: int, expected: int) -> None:
    assert default_max_tokens(n) == expected
    with pytest.raises(ValueError, match="suffix_length must be an int >= 1, got 0"):
        default_max_tokens(0)
