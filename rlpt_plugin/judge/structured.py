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
from typing import Any

from rlpt_plugin.judge.axes import Axis, Hallucination, SafetyVerdict, SameContent, Winner
from rlpt_plugin.judge.parsing import ParseError
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


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate key {dup[0]!r}")
    return dict(pairs)


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
        obj = json.loads(body, object_pairs_hook=_pairs, strict=False)
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
