"""Chunk -> prompt -> teacher -> thought-augmented token ids (``rlpt rewrite --task think``).

The teacher sees one corpus chunk (the ``think_v1`` template) and answers with the chunk copied
verbatim and thoughts inserted (rlpt_plugin/teacher/thoughts.py: tags, whitespace, the strip
check). A checked answer becomes token ids WITHOUT re-encoding the chunk: the chunk's own ids
are cut at each thought's position and the thought's ids (``<think> body </think>`` encoded
with the policy's tokenizer, text-level: a tokenizer without dedicated think tokens spells the
tags in ordinary tokens) are spliced in. So removing the thought tokens gives back the chunk's
ids exactly, by construction, and the store checks it again on load.

A thought must fall on a token boundary of the chunk: the boundary at its character offset,
or one that differs from it by whitespace only (a tokenizer that glues the space to the next
word). A thought inside a token (``hel<think>..</think>lo``) is ``thought_splits_token``.

Outcomes (``ThinkOutput.status``), all but ``augmented`` dropped with the reason in ``error``:
``augmented``; the reasons of thoughts.py (``unbalanced_tags``, ``empty_thought``,
``no_thoughts``, ``thoughts_changed_text``); ``thought_splits_token``; ``refused`` / ``empty``
(as for suffix rewriting); ``failed`` (the client gave up).

**Local annotators.** An annotator that is not an HTTP teacher (the synthetic world's oracle,
``--teacher world``) meets the same protocol as :class:`ThinkRewriter`: attributes
``model_id`` and ``template_version`` (both recorded in the manifest), ``async def
rewrite(items: Sequence[ThinkInput]) -> list[ThinkOutput]`` (one output per input, in order),
and optionally ``async def aclose()``. The easy way to build outputs is
:func:`classify_answer` on the annotator's augmented text, which applies every check above.
An input's ``chunk_id`` is ``"<doc_index>:<chunk_index>"``: tokens ``[k * L, (k + 1) * L)`` of
document ``doc_index`` (its index in the corpus, as the corpus reader numbers it) for chunk
``k`` and ``--chunk-length L``; with ``L`` at least the longest document, chunk 0 is the whole
document (what a document-level annotator such as the world's wants). ``text`` is the chunk's
ids decoded with the run's tokenizer; the answer is checked against it.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass

from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams, TeacherClient, check_results
from rlpt_plugin.teacher.rewriter import check_batch, is_refusal
from rlpt_plugin.teacher.templates import Template
from rlpt_plugin.teacher.thoughts import REASONS, Thought, ThoughtError, parse_thoughts
from rlpt_plugin.types import Tokenizer, token_ids

THINK_STATUSES: tuple[str, ...] = ("augmented", *REASONS, "thought_splits_token", "refused", "empty", "failed")
KEPT = "augmented"
PLACEHOLDER = "chunk"


def default_think_max_tokens(chunk_length: int) -> int:
    """New tokens to ask for: ``4 * chunk_length`` (the copied chunk, thoughts up to about
    twice its length, and room for a teacher tokenizer finer than the student's)."""
    if isinstance(chunk_length, bool) or not isinstance(chunk_length, int) or chunk_length < 1:
        raise ValueError(f"chunk_length must be an int >= 1, got {chunk_length!r}")
    return 4 * chunk_length


@dataclass(frozen=True)
class ThinkInput:
    """One corpus chunk: its id, its token ids and their decoded text."""

    chunk_id: str
    token_ids: tuple[int, ...]
    text: str

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_id, str) or not self.chunk_id:
            raise ValueError(f"chunk_id must be a non-empty string, got {self.chunk_id!r}")
        object.__setattr__(self, "token_ids", token_ids("token_ids", self.token_ids))
        if not self.token_ids:
            raise ValueError(f"chunk {self.chunk_id}: token_ids must not be empty")


@dataclass(frozen=True)
class ThinkOutput:
    """A chunk's outcome; ``token_ids`` / ``thought_mask`` (1 = thought token) are empty unless
    ``status`` is ``augmented``."""

    chunk_id: str
    status: str
    token_ids: tuple[int, ...]
    thought_mask: tuple[int, ...]
    error: str | None
    cached: bool
    num_thoughts: int = 0


def _boundaries(ids: Sequence[int], text: str, tokenizer: Tokenizer) -> list[tuple[int, int]]:
    """``(character offset, token index)`` of every token boundary whose decoded prefix is a
    prefix of ``text`` (a byte-level tokenizer's partial characters are no boundary)."""
    out = [(0, 0)]
    for k in range(1, len(ids)):
        head = tokenizer.decode(ids[:k])
        if text.startswith(head) and len(head) > out[-1][0]:
            out.append((len(head), k))
    out.append((len(text), len(ids)))
    return out


def _token_index(offset: int, bounds: list[tuple[int, int]], text: str) -> int | None:
    """The token index where a thought at ``offset`` goes, or None inside a token."""
    chars = [c for c, _ in bounds]
    i = bisect.bisect_right(chars, offset) - 1  # the last boundary at or before the offset
    if i >= 0 and not text[chars[i]:offset].strip():
        return bounds[i][1]
    if i + 1 < len(bounds) and not text[offset:chars[i + 1]].strip():
        return bounds[i + 1][1]
    return None


def splice(item: ThinkInput, thoughts: Sequence[Thought], tokenizer: Tokenizer) -> tuple[list[int], list[int]]:
    """The chunk's ids with each thought's ids inserted, and the thought mask (1 = thought).
    :class:`ValueError` starting ``thought_splits_token:`` when a thought sits inside a token."""
    bounds = _boundaries(item.token_ids, item.text, tokenizer)
    tokens: list[int] = []
    mask: list[int] = []
    done = 0
    for n, thought in enumerate(thoughts):
        k = _token_index(thought.offset, bounds, item.text)
        if k is None:
            raise ValueError(f"thought_splits_token: thought {n} at character {thought.offset} falls inside "
                             f"a token\nchunk: {item.text[max(0, thought.offset - 15):thought.offset + 15]!r}")
        ids = tokenizer.encode(thought.text())
        tokens += item.token_ids[done:k]
        mask += [0] * (k - done)
        tokens += ids
        mask += [1] * len(ids)
        done = k
    tokens += item.token_ids[done:]
    mask += [0] * (len(item.token_ids) - done)
    return tokens, mask


def classify_answer(item: ThinkInput, answer: str, tokenizer: Tokenizer, *, cached: bool = False) -> ThinkOutput:
    """A teacher's (or a local annotator's) augmented text as an outcome (module docstring)."""
    def dropped(status: str, error: str) -> ThinkOutput:
        return ThinkOutput(item.chunk_id, status, (), (), error, cached)

    if not answer.strip():
        return dropped("empty", f"empty: the teacher's answer is whitespace only\nanswer: {answer[:80]!r}")
    if is_refusal(answer):
        return dropped("refused", f"refused: the teacher refused\nanswer: {answer.strip()[:80]!r}")
    try:
        thoughts = parse_thoughts(answer, item.text)
        tokens, mask = splice(item, thoughts, tokenizer)
    except ThoughtError as err:
        return dropped(err.reason, str(err))
    except ValueError as err:  # splice: thought_splits_token
        return dropped("thought_splits_token", str(err))
    return ThinkOutput(item.chunk_id, KEPT, tuple(tokens), tuple(mask), None, cached, len(thoughts))


class ThinkRewriter:
    """Asks a teacher to insert thoughts into chunks; outputs follow the module's contract."""

    def __init__(self, client: TeacherClient, tokenizer: Tokenizer, template: Template,
                 params: SamplingParams, *, kind: str | None = None) -> None:
        if not isinstance(template, Template):
            raise ValueError(f"template must be a Template, got {type(template).__name__}")
        if template.placeholders != (PLACEHOLDER,):
            raise ValueError(f"template {template.name!r} must declare exactly the placeholder "
                             f"{{{PLACEHOLDER}}} for the think task (`placeholders: {PLACEHOLDER}`), "
                             f"but declares {list(template.placeholders)}")
        if not isinstance(params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(params).__name__}")
        if kind not in (None, "chat", "completions"):
            raise ValueError(f"kind must be 'chat', 'completions' or None, got {kind!r}")
        self.client = client
        self.tokenizer = tokenizer
        self.template = template
        self.params = params
        self.kind = kind
        self.model_id = getattr(client, "model_id", "unknown")
        self.template_version = template.version

    def build_request(self, item: ThinkInput) -> GenerationRequest:
        rendered = self.template.fill({PLACEHOLDER: item.text}, kind=self.kind)
        return GenerationRequest(request_id=item.chunk_id, params=self.params, prompt=rendered.prompt,
                                 messages=rendered.messages, assistant_prefix="")

    async def rewrite(self, items: Sequence[ThinkInput]) -> list[ThinkOutput]:
        """One outcome per chunk, in input order."""
        check_batch(items, ThinkInput, "chunk_id")
        requests = [self.build_request(item) for item in items]
        results = await self.client.generate(requests)
        check_results(requests, results)
        outputs = []
        for item, res in zip(items, results):
            if not res.ok:
                outputs.append(ThinkOutput(item.chunk_id, "failed", (), (), res.error or "teacher failed "
                                           "without a reason", res.cached))
            else:
                outputs.append(classify_answer(item, res.text or "", self.tokenizer, cached=res.cached))
        return outputs

    async def aclose(self) -> None:
        await self.client.aclose()

