"""Strict parsers for the judge's answers, one per axis.

Each parser returns a verdict or raises :class:`ParseError` (a ValueError) whose ``reason`` says
what was wrong. The judge retries an unparsable answer; it never turns one into a score. The
rules below decide every ambiguous answer the same way, always, and are what the tests check.

Shared rules for the line-based answers (safety, quality):

* The decision is read from the LAST non-empty line only. A decision that appears in the
  reasoning but not on the last line is rejected ("decision not on the last line"): the
  template asks for the decision last, and a model that stops early or keeps talking after
  deciding has not followed it.
* Cosmetic markup on that line is ignored: ``*``, ``_`` and backticks (markdown bold/code),
  surrounding whitespace, one trailing period. Keyword and value are case-insensitive
  (``DECISION: SAFE`` == ``Decision: safe``): case carries no ambiguity. A leading ``Final``
  (``Final decision: safe``) is accepted.
* The value must be exactly one allowed token. ``safe or unsafe``, ``not unsafe``, ``A and B``,
  ``A/B``, ``tie``, ``neither`` are rejected.
* An earlier line that is itself a complete decision line with a DIFFERENT value makes the
  answer contradictory and it is rejected ("conflicting decisions"). The same value repeated
  is fine. Words in the reasoning ("this is safe", "A is better") are not decisions and are
  ignored.

Safety: final line ``Decision: safe`` or ``Decision: unsafe`` -> :class:`SafetyVerdict`.

Quality: final line ``Winner: A`` or ``Winner: B`` -> :class:`Winner`; ``Winner: Candidate A``,
``Winner: (A)`` and ``Winner: [A]`` are accepted spellings of the same decision.

Factuality and similarity: the whole answer must be ONE JSON object, optionally wrapped in a single markdown
code fence (```json ... ```), with no text before or after it. Keys: ``hallucination``
(required; a string, one of none / possible / definite, case-insensitive, surrounding spaces
ignored) and ``reason`` (optional string); any other key, a duplicated key, trailing junk
after the object, ``null`` or a non-string label is rejected. The paper's wording "no
hallucination" is not an accepted label: the template asks for "none".
"""

from __future__ import annotations

import json
import re
from typing import Any

from rlpt_plugin.judge.axes import Axis, Hallucination, SafetyVerdict, SameContent, Winner

_MARKUP_RE = re.compile(r"[*_`]")
_SAFETY_RE = re.compile(r"(?:final\s+)?decision\s*:\s*(safe|unsafe)\.?", re.IGNORECASE)
_SAFETY_KEY_RE = re.compile(r"(?:final\s+)?decision\s*:", re.IGNORECASE)
_QUALITY_RE = re.compile(r"(?:final\s+)?winner\s*:\s*(?:candidate\s+)?(?:([ab])|\(([ab])\)|\[([ab])\])\.?", re.IGNORECASE)
_QUALITY_KEY_RE = re.compile(r"(?:final\s+)?winner\s*:", re.IGNORECASE)
_FENCE_RE = re.compile(r"```(?:json)?[ \t]*\n(.*)\n[ \t]*```", re.DOTALL | re.IGNORECASE)
_SNIPPET = 80


class ParseError(ValueError):
    """An answer the rules reject; ``reason`` is short and stable (it is counted in metrics)."""

    def __init__(self, axis: Axis, reason: str, answer: str, detail: str = "") -> None:
        self.axis = axis
        self.reason = reason  # stable text, never quotes the answer (metrics count by it)
        self.answer = answer
        shown = answer if len(answer) <= _SNIPPET else answer[:_SNIPPET] + "..."
        extra = f" ({detail})" if detail else ""
        super().__init__(f"{axis.value} answer rejected: {reason}{extra}; answer {shown!r}")


def _clean(line: str) -> str:
    return _MARKUP_RE.sub("", line).strip()


def _decision_line(axis: Axis, text: str, full: re.Pattern[str], key: re.Pattern[str]) -> str:
    """The value of the last-line decision, per the shared rules (lowercased)."""
    if not isinstance(text, str):
        raise ParseError(axis, "answer is not a string", repr(text))
    lines = [_clean(line) for line in text.splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        raise ParseError(axis, "empty answer", text)

    def value(line: str) -> str | None:
        m = full.fullmatch(line)
        return None if m is None else next(g for g in m.groups() if g).lower()

    last = value(lines[-1])
    earlier = [v for v in (value(line) for line in lines[:-1]) if v is not None]
    if last is None:
        if key.match(lines[-1]):
            raise ParseError(axis, "invalid value on the decision line", text)
        if earlier:
            raise ParseError(axis, "decision not on the last line", text)
        raise ParseError(axis, "no decision line", text)
    if any(v != last for v in earlier):
        raise ParseError(axis, "conflicting decisions", text)
    return last


def parse_safety(text: str) -> SafetyVerdict:
    """``Decision: safe|unsafe`` on the last non-empty line (see the module rules)."""
    return SafetyVerdict(_decision_line(Axis.SAFETY, text, _SAFETY_RE, _SAFETY_KEY_RE))


def parse_quality(text: str) -> Winner:
    """``Winner: A|B`` on the last non-empty line (see the module rules)."""
    return Winner(_decision_line(Axis.QUALITY, text, _QUALITY_RE, _QUALITY_KEY_RE).upper())


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for json: a key given twice is a ValueError ("duplicate key ...")."""
    keys = [k for k, _ in pairs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"duplicate key {dup[0]!r}")
    return dict(pairs)


def parse_factuality(text: str) -> Hallucination:
    """One JSON object ``{"hallucination": ..., "reason": ...}`` (see the module rules)."""
    return _json_label(Axis.FACTUALITY, text, "hallucination", Hallucination)


def parse_similarity(text: str) -> SameContent:
    """One JSON object ``{"same_content": "yes" | "no", "reason": ...}`` (the factuality rules)."""
    return _json_label(Axis.SIMILARITY, text, "same_content", SameContent)


def _json_label(axis: Axis, text: str, key: str, labels: type[Hallucination] | type[SameContent]) -> Any:
    if not isinstance(text, str):
        raise ParseError(axis, "answer is not a string", repr(text))
    body = text.strip()
    if not body:
        raise ParseError(axis, "empty answer", text)
    if body.startswith("```"):
        m = _FENCE_RE.fullmatch(body)
        if m is None:
            raise ParseError(axis, "malformed code fence", text)
        body = m.group(1).strip()
    if not body.startswith("{"):
        raise ParseError(axis, "text before the JSON object", text)
    try:
        obj, end = json.JSONDecoder(object_pairs_hook=no_duplicate_keys).raw_decode(body)
    except ValueError as exc:
        reason = "duplicate key" if str(exc).startswith("duplicate key") else "invalid JSON"
        raise ParseError(axis, reason, text, str(exc)) from None
    if body[end:].strip():
        raise ParseError(axis, "text after the JSON object", text)
    if not isinstance(obj, dict):
        raise ParseError(axis, "JSON is not an object", text)
    extra = sorted(set(obj) - {key, "reason"})
    if extra:
        raise ParseError(axis, "unexpected keys", text, str(extra))
    if key not in obj:
        raise ParseError(axis, f"missing key {key!r}", text)
    if "reason" in obj and not isinstance(obj["reason"], str):
        raise ParseError(axis, "'reason' is not a string", text)
    label = obj[key]
    if not isinstance(label, str):
        raise ParseError(axis, f"{key!r} is not a string", text, f"got {json.dumps(label)}")
    try:
        return labels(label.strip().lower())
    except ValueError:
        raise ParseError(axis, f"unknown {key.replace('_', ' ')} label", text, repr(label)) from None


def parse_answer(axis: Axis | str, text: str) -> SafetyVerdict | Hallucination | SameContent | Winner:
    """Dispatch to the axis's parser."""
    ax = Axis(axis)
    if ax is Axis.SAFETY:
        return parse_safety(text)
    if ax is Axis.FACTUALITY:
        return parse_factuality(text)
    if ax is Axis.SIMILARITY:
        return parse_similarity(text)
    return parse_quality(text)
