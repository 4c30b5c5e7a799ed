"""Window -> prompt -> teacher -> parsed, re-tokenized rewrite of the window's suffix.

For each window the teacher sees the prefix and the original suffix (see the rewrite template)
and answers with a continuation, primed by the last words of the prefix. The answer is
classified, never silently dropped:

* ``failed``    the client gave up (error carried over); no tokens;
* ``empty``     the answer is whitespace only (after removing an echoed prime); no tokens;
* ``refused``   the answer *starts* with a refusal phrase (``REFUSAL_PATTERNS``, matched
                case-insensitively after leading whitespace / quotes); no tokens;
* ``copied``    the re-tokenized answer equals the original suffix tokens (the teacher judged
                the suffix good and kept it);
* ``rewritten`` anything else.

Token ids are the answer re-encoded with the policy's tokenizer and *cut* to ``suffix_length``
tokens. A shorter answer stays shorter: padding it would make the trainer learn filler tokens
as if the teacher had written them. How many tokens to ask the teacher for is
:func:`default_max_tokens` unless the caller says otherwise.

``overlap`` is a bag-of-tokens overlap, ``|multiset(rewrite) & multiset(original)| /
max(len(rewrite), len(original))``, in [0, 1]; 1.0 means the same tokens (in any order) and the
same length. It ignores position on purpose: a rewrite that fixes one early word shifts every
later token, and a positional match would then call a near-copy "completely different". It is
0.0 for outcomes without tokens.
"""

from __future__ import annotations

import enum
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlpt_plugin.teacher.protocol import (
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    TeacherClient,
    check_results,
)
from rlpt_plugin.teacher.templates import Template
from rlpt_plugin.types import Tokenizer, token_ids

# Phrases that open a refusal rather than a continuation. Matched only at the start of the
# answer: the same words inside a story ("she said I cannot go") are ordinary text. Kept short
# on purpose; a false positive only means the window keeps its original suffix.
REFUSAL_PATTERNS: tuple[str, ...] = (
    "i can't help",
    "i cannot",
    "i can't assist",
    "i can't provide",
    "i'm sorry",
    "i am sorry",
    "sorry, but i",
    "as an ai",
    "i'm unable to",
    "i am unable to",
    "i won't be able",
)
_LEADING_NOISE = " \t\r\n\"'`“”‘’«»"


def default_max_tokens(suffix_length: int) -> int:
    """New tokens to ask the teacher for an N-token rewrite: ``N + max(8, ceil(N / 8))``.

    N itself is the paper's choice (128 new tokens for N = 128). The margin (144 for N = 128)
    is there because the teacher counts in its own tokenizer: a teacher whose tokenizer splits
    text finer than the student's, or a server that repeats the primed words before continuing,
    would otherwise stop short of N student tokens and leave a shorter rewrite. It costs only
    teacher time: the answer is cut to N student tokens anyway.
    """
    if isinstance(suffix_length, bool) or not isinstance(suffix_length, int) or suffix_length < 1:
        raise ValueError(f"suffix_length must be an int >= 1, got {suffix_length!r}")
    return suffix_length + max(8, math.ceil(suffix_length / 8))


class RewriteStatus(enum.StrEnum):
    """How a window's rewrite turned out (see the module docstring)."""

    REWRITTEN = "rewritten"
    COPIED = "copied"
    REFUSED = "refused"
    EMPTY = "empty"
    FAILED = "failed"


@dataclass(frozen=True)
class RewriteInput:
    """One window: its prefix and original suffix as text, and the suffix's token ids."""

    window_id: str
    prefix_text: str
    suffix_text: str
    suffix_ids: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.window_id, str) or not self.window_id:
            raise ValueError(f"window_id must be a non-empty string, got {self.window_id!r}")
        for name in ("prefix_text", "suffix_text"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {type(getattr(self, name)).__name__}")
        object.__setattr__(self, "suffix_ids", token_ids("suffix_ids", self.suffix_ids))


@dataclass(frozen=True)
class RewriteOutput:
    """The classified rewrite of one window; ``token_ids`` is empty unless rewritten / copied."""

    window_id: str
    status: RewriteStatus
    token_ids: tuple[int, ...]
    error: str | None
    cached: bool
    overlap: float


def bag_overlap(a: Sequence[int], b: Sequence[int]) -> float:
    """``|multiset(a) & multiset(b)| / max(len(a), len(b))``; 0.0 when both are empty."""
    longest = max(len(a), len(b))
    if longest == 0:
        return 0.0
    common = Counter(a) & Counter(b)
    return sum(common.values()) / longest


def is_refusal(text: str) -> bool:
    """True when ``text`` opens with one of ``REFUSAL_PATTERNS`` (case-insensitive)."""
    head = text.lstrip(_LEADING_NOISE).replace("’", "'").replace("‘", "'").lower()
    return any(head.startswith(p) for p in REFUSAL_PATTERNS)


def strip_echo(text: str, assistant_prefix: str) -> str:
    """Remove a leading repetition of ``assistant_prefix`` (whitespace-insensitive).

    Servers without ``continue_final_message`` often restart the answer from the primed words;
    keeping them would duplicate five words of the prefix in the training text.
    """
    prime_words = assistant_prefix.split()
    if not prime_words:
        return text
    # Match the prime's words separated by any whitespace, after optional leading noise.
    pattern = r"[\s\"'`]*" + r"\s+".join(re.escape(w) for w in prime_words)
    match = re.match(pattern, text)
    return text[match.end():] if match else text


class Rewriter:
    """Turns windows into teacher rewrites of at most ``suffix_length`` policy tokens."""

    def __init__(self, client: TeacherClient, tokenizer: Tokenizer, template: Template,
                 suffix_length: int, params: SamplingParams, *, kind: str | None = None) -> None:  # fmt: skip
        """``kind`` is the request kind the client speaks ("chat" / "completions"); None sends
        the template's own kind. A chat template is flattened for completions (templates.py)."""
        if isinstance(suffix_length, bool) or not isinstance(suffix_length, int) or suffix_length < 1:
            raise ValueError(f"suffix_length must be an int >= 1, got {suffix_length!r}")
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if not isinstance(template, Template):
            raise ValueError(f"template must be a Template, got {type(template).__name__}")
        self.client = client
        self.tokenizer = tokenizer
        self.template = template
        if kind not in (None, "chat", "completions"):
            raise ValueError(f"kind must be 'chat', 'completions' or None, got {kind!r}")
        if kind == "chat" and template.kind != "chat":
            raise ValueError(f"kind is 'chat' but template {template.name!r} is a {template.kind} template")
        self.suffix_length = suffix_length
        self.params = params
        self.kind = kind

    def build_request(self, item: RewriteInput) -> GenerationRequest:
        """The teacher request for one window (request_id = window_id)."""
        rendered = self.template.render(item.prefix_text, item.suffix_text, kind=self.kind)
        return GenerationRequest(request_id=item.window_id, params=self.params, prompt=rendered.prompt,
                                 messages=rendered.messages, assistant_prefix=rendered.assistant_prefix)  # fmt: skip

    async def rewrite(self, items: Sequence[RewriteInput]) -> list[RewriteOutput]:
        """Rewrite every window; outputs in input order, one per input."""
        check_batch(items)
        requests = [self.build_request(item) for item in items]
        results = await self.client.generate(requests)
        check_results(requests, results)
        return [self._classify(item, req, res) for item, req, res in zip(items, requests, results)]

    async def aclose(self) -> None:
        """Close the client (idempotent when the client's ``aclose`` is)."""
        await self.client.aclose()

    def _classify(self, item: RewriteInput, req: GenerationRequest, res: GenerationResult) -> RewriteOutput:
        def out(status: RewriteStatus, ids: tuple[int, ...] = (), error: str | None = None) -> RewriteOutput:
            original = item.suffix_ids[: self.suffix_length]
            overlap = bag_overlap(ids, original) if ids else 0.0
            return RewriteOutput(item.window_id, status, ids, error, res.cached, overlap)

        if not res.ok:
            return out(RewriteStatus.FAILED, error=res.error or "teacher failed without a reason")
        text = strip_echo(res.text or "", req.assistant_prefix)
        if not text.strip():
            return out(RewriteStatus.EMPTY, error=f"teacher answer is whitespace only: {res.text!r}")
        if is_refusal(text):
            return out(RewriteStatus.REFUSED, error=f"teacher refused: {text.strip()[:80]!r}")
        return classify_text(item, text, self.tokenizer, self.suffix_length, cached=res.cached)


def check_batch(items: Sequence[Any], kind: type = RewriteInput, id_field: str = "window_id") -> None:
    """Every item a ``kind``, its ``id_field`` unique in the batch (ValueError otherwise)."""
    seen: set[str] = set()
    for i, item in enumerate(items):
        if not isinstance(item, kind):
            raise ValueError(f"items[{i}] must be a {kind.__name__}, got {type(item).__name__}")
        key = getattr(item, id_field)
        if key in seen:
            raise ValueError(f"items[{i}].{id_field} must be unique in a batch, got duplicate {key!r}")
        seen.add(key)


def classify_text(item: RewriteInput, text: str, tokenizer: Tokenizer, suffix_length: int, *,
                  cached: bool = False) -> RewriteOutput:
    """A teacher's accepted answer as a rewrite: re-tokenized and cut to ``suffix_length``;
    copied when it equals the original suffix, empty when it encodes to no tokens."""
    original = item.suffix_ids[:suffix_length]
    ids = tuple(tokenizer.encode(text))[:suffix_length]
    if not ids:  # e.g. only characters the tokenizer drops
        return RewriteOutput(item.window_id, RewriteStatus.EMPTY, (),
                             f"teacher answer encodes to no tokens: {text[:80]!r}", cached, 0.0)
    status = RewriteStatus.COPIED if ids == original else RewriteStatus.REWRITTEN
    return RewriteOutput(item.window_id, status, ids, None, cached, bag_overlap(ids, original))
