"""Verdicts as JSON constrained by a schema: one schema per axis, its GBNF grammar, its parser.

With structured output on (``JudgeConfig.structured_output``), every judge request carries the
axis's schema and a server that supports constrained decoding can only produce an answer that
this module's parser accepts: a random-weight model yields 0 parse failures (the server tier,
``tests/servers``, asserts it against llama.cpp's server).

Each axis answers one JSON object with exactly two keys, the reason first (so a model thinks
before it decides, as the text templates ask) and the decision second:

* safety:     ``{"reason": "...", "decision": "safe" | "unsafe"}``
* factuality: ``{"reason": "...", "hallucination": "none" | "possible" | "definite"}``
* quality:    ``{"reason": "...", "winner": "A" | "B"}``
* similarity: ``{"reason": "...", "same_content": "yes" | "no"}``

``reason`` is a string of at most :data:`REASON_MAX_CHARS` characters (a few sentences; the
decoder closes it there), so a constrained answer always fits into the judge's token budget
(under 1,024 tokens even at four tokens per character; ``rlpt.judge.max_tokens`` is 4,096).

:func:`parse_json_verdict` accepts that form exactly: one JSON object and only whitespace around
it (no code fence), both keys present, no other key, no duplicated key, ``reason`` a string,
the decision one of the allowed values spelled exactly (the schema's enum is case-sensitive).
Raw control characters inside strings are accepted (``json.loads(strict=False)``): the grammar
llama-cpp-python 0.3.36 derives from a schema lets a model write them in ``reason``, and they
carry no decision.
It raises :class:`rlpt_plugin.judge.parsing.ParseError` otherwise, like the text parsers.

Modes (:class:`FormatChain`). ``off``: free-text answers read by the strict text parsers
(:mod:`rlpt_plugin.judge.parsing`). ``json_schema`` / ``json_object`` / ``grammar``: every
request carries its axis's schema in that form and the answer must be the schema's JSON object
exactly; use one when the server is known to support it. ``auto``: ``json_schema`` first; when
the server rejects the field (HTTP 400 / 422 / 500 naming it) or ignores it (the answer is not
a JSON object, which a constrained decoder cannot produce), the next form (``json_object`` on
chat routes, ``grammar`` on completions routes), then free text, read by the text parser.

How each mode reaches the server (``rlpt_plugin.teacher.protocol.StructuredOutput``):

* ``json_schema``: OpenAI's ``response_format`` type ``json_schema``: vLLM (chat and
  completions), SGLang, llama.cpp's own ``llama-server``, OpenAI. llama-cpp-python's server
  (0.3.36) refuses it on chat with HTTP 500 quoting its validation error (its
  ``response_format`` knows ``text`` / ``json_object``) and ignores it on completions.
* ``json_object``: ``response_format={"type": "json_object", "schema": ...}``:
  llama-cpp-python's server (chat route only) and ``llama-server``.
* ``grammar``: the schema written as a GBNF grammar in the ``grammar`` body field:
  llama-cpp-python's server (chat and completions) and ``llama-server``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rlpt_plugin.judge.axes import Axis, Hallucination, SafetyVerdict, SameContent, Winner
from rlpt_plugin.judge.parsing import ParseError, no_duplicate_keys
from rlpt_plugin.teacher.protocol import STRUCTURED_KINDS, StructuredOutput

REASON_MAX_CHARS = 240
MODES: tuple[str, ...] = ("auto", "off", *STRUCTURED_KINDS)

# The decision key of each axis and its allowed values, in schema order.
DECISIONS: dict[Axis, tuple[str, tuple[str, ...]]] = {
    Axis.SAFETY: ("decision", tuple(v.value for v in SafetyVerdict)),
    Axis.FACTUALITY: ("hallucination", tuple(v.value for v in Hallucination)),
    Axis.QUALITY: ("winner", tuple(v.value for v in Winner)),
    Axis.SIMILARITY: ("same_content", tuple(v.value for v in SameContent)),
}
_VERDICT = {Axis.SAFETY: SafetyVerdict, Axis.FACTUALITY: Hallucination, Axis.QUALITY: Winner,
            Axis.SIMILARITY: SameContent}


def schema(axis: Axis) -> dict[str, Any]:
    """The JSON schema of ``axis``'s verdict."""
    key, values = DECISIONS[Axis(axis)]
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
            key: {"type": "string", "enum": list(values)},
        },
        "required": ["reason", key],
        "additionalProperties": False,
    }


def grammar(axis: Axis) -> str:
    """``schema(axis)`` as a GBNF grammar (llama.cpp's grammar format), whitespace bounded."""
    key, values = DECISIONS[Axis(axis)]
    alternatives = " | ".join(json.dumps(json.dumps(v)) for v in values)
    return "\n".join([
        f'root ::= "{{" ws "\\"reason\\"" ws ":" ws reason ws "," ws "\\"{key}\\"" ws ":" ws value ws "}}"',
        f"value ::= {alternatives}",
        f'reason ::= "\\"" char{{0,{REASON_MAX_CHARS}}} "\\""',
        'char ::= [^"\\\\\\x00-\\x1f] | "\\\\" ["\\\\/bfnrt]',
        "ws ::= [ ]?",
        "",
    ])


def structured_output(axis: Axis, kind: str) -> StructuredOutput:
    """The request-side form of ``axis``'s schema for mode ``kind``."""
    ax = Axis(axis)
    # Not sorted: constrained decoders generate properties in the schema's order (reason first).
    text = json.dumps(schema(ax), separators=(",", ":"))
    return StructuredOutput(kind=kind, name=f"rlpt_{ax.value}_verdict", schema=text,
                            grammar=grammar(ax) if kind == "grammar" else "")


def parse_json_verdict(axis: Axis, text: str) -> SafetyVerdict | Hallucination | SameContent | Winner:
    """The verdict of a structured answer (see the module docstring); ParseError otherwise."""
    ax = Axis(axis)
    if not isinstance(text, str):
        raise ParseError(ax, "answer is not a string", repr(text))
    body = text.strip()
    if not body:
        raise ParseError(ax, "empty answer", text)
    if not body.startswith("{"):
        raise ParseError(ax, "not a JSON object", text)
    try:
        obj = json.loads(body, object_pairs_hook=no_duplicate_keys, strict=False)
    except ValueError as exc:
        reason = "duplicate key" if str(exc).startswith("duplicate key") else "invalid JSON"
        raise ParseError(ax, reason, text, str(exc)) from None
    if not isinstance(obj, dict):
        raise ParseError(ax, "JSON is not an object", text)
    key, values = DECISIONS[ax]
    if set(obj) != {"reason", key}:
        raise ParseError(ax, "keys are not exactly the schema's", text, f"want ['reason', {key!r}], got {sorted(obj)}")
    if not isinstance(obj["reason"], str):
        raise ParseError(ax, "'reason' is not a string", text)
    value = obj[key]
    if not isinstance(value, str) or value not in values:
        raise ParseError(ax, f"{key!r} is not one of the schema's values", text, f"got {json.dumps(value)}")
    return _VERDICT[ax](value)


class FormatChain:
    """The structured-output forms a judge tries, in order, for one mode (module docstring).

    ``auto``: ``json_schema``, then ``json_object`` on chat routes or ``grammar`` on completions
    routes, then free text (None); any other mode is its one form (``off``: free text)."""

    def __init__(self, mode: str, endpoint_kind: str) -> None:
        if mode not in MODES:
            raise ValueError(f"structured_output must be one of {list(MODES)}, got {mode!r}")
        if mode == "json_object" and endpoint_kind != "chat":
            raise ValueError("structured_output 'json_object' needs a chat endpoint; on a completions "
                             "endpoint use 'grammar' or 'json_schema'")
        self.mode = mode
        self.forms: tuple[str | None, ...] = (
            ("json_schema", "json_object" if endpoint_kind == "chat" else "grammar", None) if mode == "auto"
            else (None if mode == "off" else mode,))
        self._index = 0

    @property
    def current(self) -> str | None:
        """The form requests carry now (None: free text)."""
        return self.forms[self._index]

    @property
    def first(self) -> str | None:
        return self.forms[0]

    def downgrade(self, rejected: str | None) -> bool:
        """The server refused form ``rejected``: move on to the next, once per form (False when
        another request already moved past it, or there is nothing after it)."""
        if self.current != rejected or self._index + 1 >= len(self.forms):
            return False
        self._index += 1
        return True

    def refused(self, ok: bool, text: str | None, error: str | None) -> bool:
        """Whether a result says the server refused or ignored the form it was asked in: an error
        naming the field, or (``auto`` only: a constrained decoder cannot answer anything else) a
        free-text answer."""
        if self.mode != "auto" or self.current is None:
            return False
        return (not ok and _rejects_field(error)) or (ok and _ignored_field(text))

    def parse(self, axis: Axis, text: str, text_parser: Callable[[str], Any]) -> Any:
        """The verdict of one answer under this mode, or ParseError: ``off`` the strict text
        parser, a fixed form the exact JSON parser, ``auto`` the JSON parser and then the text
        parser (the JSON error wins for an answer that starts as a JSON object)."""
        if self.mode == "off":
            return text_parser(text)
        if self.mode != "auto":
            return parse_json_verdict(axis, text)
        try:
            return parse_json_verdict(axis, text)
        except ParseError as json_error:
            try:
                return text_parser(text)
            except ParseError as text_error:
                raise (json_error if text.strip().startswith("{") else text_error) from None


_FIELD_WORDS = ("response_format", "json_schema", "json_object", "grammar", "schema", "structured", "guided")


def _ignored_field(text: str | None) -> bool:
    """True for an answer to a structured request that is not even the start of a JSON object."""
    return text is not None and bool(text.strip()) and not text.lstrip().startswith("{")


def _rejects_field(error: str | None) -> bool:
    """True for a server refusing the structured-output field: HTTP 400, 422 or 500 whose message
    names it (llama-cpp-python 0.3.36 answers an unknown response_format type with a 500 quoting
    its validation error); a context-length 400 must not switch the format off."""
    if not error or not error.startswith(("HTTP 400", "HTTP 422", "HTTP 500")):
        return False
    low = error.lower()
    return any(w in low for w in _FIELD_WORDS)

