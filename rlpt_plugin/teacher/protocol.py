"""Request / result types shared by every teacher backend, and the ``TeacherClient`` protocol.

Everything here is plain Python (no torch, no HTTP) so the cache, the rewriter and tests can use
the types without pulling in a backend. All types are frozen so a request can be hashed, cached
and logged without anyone mutating it on the way.
"""

from __future__ import annotations

import enum
import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


def _int_field(name: str, value: Any, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise a ValueError naming the field."""
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int >= {minimum}, got bool {value!r}")
    try:
        out = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}") from None
    if out < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {out}")
    return out


STRUCTURED_KINDS: tuple[str, ...] = ("json_schema", "json_object", "grammar")
#: The OpenAI routes a teacher may serve: /v1/chat/completions or /v1/completions.
ENDPOINT_KINDS: tuple[str, ...] = ("chat", "completions")


@dataclass(frozen=True)
class StructuredOutput:
    """Constrain the answer to ``schema`` (a JSON schema, as canonical JSON text), sent as
    ``kind`` says:

    * ``json_schema``: OpenAI's ``response_format={"type": "json_schema", "json_schema":
      {"name", "schema", "strict": true}}`` (vLLM, SGLang, llama.cpp's ``llama-server``, OpenAI);
    * ``json_object``: ``response_format={"type": "json_object", "schema": ...}``
      (llama-cpp-python's server, chat route only; ``llama-server`` too);
    * ``grammar``: the GBNF text ``grammar`` in the body's ``grammar`` field (llama-cpp-python's
      server on both routes, ``llama-server``).
    """

    kind: str
    name: str
    schema: str
    grammar: str = ""

    def __post_init__(self) -> None:
        if self.kind not in STRUCTURED_KINDS:
            raise ValueError(f"kind must be one of {list(STRUCTURED_KINDS)}, got {self.kind!r}")
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.schema, str) or not self.schema.startswith("{"):
            raise ValueError(f"schema must be a JSON object as text, got {self.schema!r}")
        if self.kind == "grammar" and not self.grammar:
            raise ValueError("grammar must be the GBNF text for kind 'grammar', got an empty string")

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "schema": self.schema, "grammar": self.grammar}


@dataclass(frozen=True)
class SamplingParams:
    """How the teacher samples. ``temperature == 0`` means greedy decoding.

    ``n`` is kept for the wire format but must be 1: every request yields exactly one result,
    which is what keeps ``generate`` order-preserving and the cache one-entry-per-key.
    """

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int | None = None
    stop: tuple[str, ...] = ()
    n: int = 1
    structured: StructuredOutput | None = None
    """Constrained decoding of the answer (None: free text); part of the cache key when set."""

    def __post_init__(self) -> None:
        temp = float(self.temperature)
        if not math.isfinite(temp) or temp < 0.0:
            raise ValueError(f"temperature must be a finite float >= 0, got {self.temperature!r}")
        top_p = float(self.top_p)
        if not (0.0 < top_p <= 1.0):
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        max_tokens = _int_field("max_tokens", self.max_tokens, 1)
        seed = None if self.seed is None else _int_field("seed", self.seed, 0)
        if isinstance(self.stop, str):
            # A bare string would silently become a tuple of single characters.
            raise ValueError(f"stop must be a sequence of strings, got the string {self.stop!r}")
        stop = tuple(self.stop)
        for i, s in enumerate(stop):
            if not isinstance(s, str) or not s:
                raise ValueError(f"stop[{i}] must be a non-empty string, got {s!r}")
        if self.structured is not None and not isinstance(self.structured, StructuredOutput):
            raise ValueError(f"structured must be None or a StructuredOutput, got {type(self.structured).__name__}")
        n = _int_field("n", self.n, 1)
        if n != 1:
            raise ValueError(f"n must be 1 (one result per request), got {n}")
        # Normalise in place (frozen, hence object.__setattr__) so equal params compare equal.
        object.__setattr__(self, "temperature", temp)
        object.__setattr__(self, "top_p", top_p)
        object.__setattr__(self, "max_tokens", max_tokens)
        object.__setattr__(self, "seed", seed)
        object.__setattr__(self, "stop", stop)
        object.__setattr__(self, "n", n)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict; used both in cache keys and request bodies, so keep it canonical.
        ``structured`` appears only when set, so the keys of free-text requests are unchanged."""
        out: dict[str, Any] = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
            "stop": list(self.stop),
            "n": self.n,
        }
        if self.structured is not None:
            out["structured"] = self.structured.as_dict()
        return out


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt for the teacher: either ``prompt`` (completions) or ``messages`` (chat).

    ``assistant_prefix`` primes the answer. For chat it is sent as a final assistant message that
    the server continues; for completions it is appended to the prompt. In both cases the
    returned text is the continuation *after* the prefix, never the prefix itself.
    """

    request_id: str
    params: SamplingParams
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    assistant_prefix: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.request_id, str) or not self.request_id:
            raise ValueError(f"request_id must be a non-empty string, got {self.request_id!r}")
        if not isinstance(self.params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(self.params).__name__}")
        if (self.prompt is None) == (self.messages is None):
            raise ValueError(
                "exactly one of prompt / messages must be set, got "
                f"prompt={'set' if self.prompt is not None else 'None'}, "
                f"messages={'set' if self.messages is not None else 'None'}"
            )
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise ValueError(f"prompt must be a string, got {type(self.prompt).__name__}")
        if self.messages is not None:
            msgs: list[tuple[str, str]] = []
            for i, pair in enumerate(self.messages):
                if isinstance(pair, str) or len(pair) != 2:
                    raise ValueError(f"messages[{i}] must be a (role, content) pair, got {pair!r}")
                role, content = pair
                if not isinstance(role, str) or not role:
                    raise ValueError(f"messages[{i}] role must be a non-empty string, got {role!r}")
                if not isinstance(content, str):
                    raise ValueError(f"messages[{i}] content must be a string, got {content!r}")
                msgs.append((role, content))
            if not msgs:
                raise ValueError("messages must be non-empty, got 0 messages")
            object.__setattr__(self, "messages", tuple(msgs))
        if not isinstance(self.assistant_prefix, str):
            raise ValueError(f"assistant_prefix must be a string, got {self.assistant_prefix!r}")

    @property
    def is_chat(self) -> bool:
        """True for a chat request (``messages``), False for a completions request."""
        return self.messages is not None

    def content_dict(self) -> dict[str, Any]:
        """Everything the answer depends on except the model and params (for cache keys)."""
        out: dict[str, Any] = {"assistant_prefix": self.assistant_prefix}
        if self.messages is not None:
            out["messages"] = [list(m) for m in self.messages]
        else:
            out["prompt"] = self.prompt
        return out


class GenerationStatus(enum.StrEnum):
    """Outcome of one request."""

    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class GenerationResult:
    """The teacher's answer to one request, or an explicit failure record.

    ``ok`` results carry ``text`` (possibly ``""``: empty is a valid answer, the rewriter
    classifies it); ``failed`` results carry ``error`` and ``text is None`` so nobody can mistake
    a failure for an empty answer.
    """

    request_id: str
    status: GenerationStatus
    text: str | None
    finish_reason: str | None
    error: str | None
    attempts: int
    latency_s: float
    cached: bool = False
    reasoning: str | None = None
    """A reasoning model's separate thinking (``message.reasoning_content`` / ``reasoning``), for
    diagnostics only: verdicts are read from ``text``; not cached."""

    def __post_init__(self) -> None:
        status = GenerationStatus(self.status)
        object.__setattr__(self, "status", status)
        if status is GenerationStatus.OK and self.text is None:
            raise ValueError("text must be a string for status ok, got None")
        if status is GenerationStatus.FAILED:
            if self.text is not None:
                raise ValueError(f"text must be None for status failed, got {self.text!r}")
            if not self.error:
                raise ValueError(f"error must be a non-empty reason for status failed, got {self.error!r}")
        _int_field("attempts", self.attempts, 0)

    @property
    def ok(self) -> bool:
        """True when the request succeeded."""
        return self.status is GenerationStatus.OK

    @classmethod
    def failure(cls, request_id: str, error: str, attempts: int, latency_s: float) -> GenerationResult:
        """A failed result with ``error`` saying what happened."""
        return cls(request_id, GenerationStatus.FAILED, None, None, error, attempts, latency_s)


@runtime_checkable
class TeacherClient(Protocol):
    """Anything that answers generation requests (HTTP server pool, in-process model, cache).

    ``generate`` returns one result per request, in request order, and never raises for a
    per-request failure: it returns a ``failed`` result instead. It may raise ValueError for a
    request the client cannot express at all (a configuration error, not a transient one).
    """

    model_id: str

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]: ...

    async def aclose(self) -> None: ...


def check_results(requests: Sequence[GenerationRequest], results: Sequence[GenerationResult]) -> None:
    """Raise RuntimeError if ``results`` breaks the order contract (a client bug, not user error)."""
    if len(results) != len(requests):
        raise RuntimeError(f"teacher returned {len(results)} results for {len(requests)} requests")
    for i, (req, res) in enumerate(zip(requests, results)):
        if req.request_id != res.request_id:
            raise RuntimeError(
                f"teacher result {i} is for request_id {res.request_id!r}, expected {req.request_id!r}"
            )
