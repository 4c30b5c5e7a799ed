"""Why requests failed, grouped: "60 x HTTP 400: maximum context length is <n> tokens ...".

A summary that says ``failed: 60`` and nothing else leaves the user to guess; listing all 60
messages buries the one that matters. :func:`failure_reason` maps an error string to a group
key, :class:`FailureTally` counts keys and keeps the first message of each as the example.

The key is the error's first line with

* the retry count removed (``HTTP 503 (4 attempts): ...`` and ``HTTP 503 (1 attempt): ...``
  are one reason; :class:`rlpt_plugin.teacher.openai_client.OpenAIClient` formats its errors
  as ``<kind> (<n> attempt[s])[: <detail>]``), and
* every other number replaced by ``<n>``, except the HTTP status (400 and 503 are different
  reasons) and numbers inside URLs (a dead replica on port 8001 is not one on port 8002).

So "you requested 621 tokens" and "you requested 640 tokens" are one reason, while messages
that differ in words stay apart. The example keeps the real numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_ATTEMPTS_RE = re.compile(r" \(\d+ attempts?\)")
_STATUS_RE = re.compile(r"^HTTP \d{3}\b")
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_NUMBER_RE = re.compile(r"\d+(?:\.\d+)?")
_AUTH_RE = re.compile(r"^HTTP 40[13]\b")
_KEY_CHARS = 160  # a reason is one line of a console summary
MAX_REASONS = 50  # distinct keys kept; the rest are counted under OTHER
OTHER = "other reasons (more than 50 distinct)"


def failure_reason(error: str | None) -> str:
    """The group key of one error string (see the module docstring)."""
    if not error or not error.strip():
        return "no reason given"
    line = error.strip().splitlines()[0]
    line = _ATTEMPTS_RE.sub("", line, count=1)
    status = _STATUS_RE.match(line)
    head, rest = (line[: status.end()], line[status.end():]) if status else ("", line)
    pieces = []
    last = 0
    for match in _URL_RE.finditer(rest):  # numbers in URLs are kept: they name the endpoint
        pieces.append(_NUMBER_RE.sub("<n>", rest[last: match.start()]))
        pieces.append(match.group(0))
        last = match.end()
    pieces.append(_NUMBER_RE.sub("<n>", rest[last:]))
    key = head + "".join(pieces)
    return key if len(key) <= _KEY_CHARS else key[:_KEY_CHARS] + "..."


def is_auth_failure(error: str | None) -> bool:
    """True for HTTP 401 / 403: the server rejected the credentials, for every request alike."""
    return bool(error) and bool(_AUTH_RE.match(error.strip()))


@dataclass
class FailureReason:
    """One group: its key, how many failures it holds, and the first full message seen."""

    reason: str
    count: int
    example: str


class FailureTally:
    """Counts failures by :func:`failure_reason`, keeping one example message each."""

    def __init__(self) -> None:
        self._groups: dict[str, FailureReason] = {}

    def add(self, error: str | None, count: int = 1) -> None:
        """Count ``count`` failures with message ``error``."""
        key = failure_reason(error)
        if key not in self._groups and len(self._groups) >= MAX_REASONS:
            key = OTHER
        group = self._groups.get(key)
        if group is None:
            self._groups[key] = FailureReason(key, count, (error or "").strip()[:500])
        else:
            group.count += count

    @property
    def total(self) -> int:
        """Failures counted."""
        return sum(g.count for g in self._groups.values())

    def reasons(self) -> list[FailureReason]:
        """Groups, most frequent first (ties by reason, so the order is reproducible)."""
        return sorted(self._groups.values(), key=lambda g: (-g.count, g.reason))

    def as_list(self) -> list[dict[str, Any]]:
        """JSON-ready ``[{"reason", "count", "example"}, ...]``, most frequent first."""
        return [{"reason": g.reason, "count": g.count, "example": g.example} for g in self.reasons()]

    def lines(self, limit: int = 10, indent: str = "  ") -> list[str]:
        """Console lines: one per reason (count, key) and its example; at most ``limit`` reasons."""
        return reason_lines(self.as_list(), limit, indent)


def reason_lines(groups: list[dict[str, Any]], limit: int = 10, indent: str = "  ") -> list[str]:
    """Console lines for :meth:`FailureTally.as_list` output (e.g. read back from a summary)."""
    out: list[str] = []
    for g in groups[:limit]:
        out.append(f"{indent}{g['count']} x {g['reason']}")
        if g["example"] and g["example"] != g["reason"]:
            out.append(f"{indent}    e.g. {g['example'][:300]}")
    if len(groups) > limit:
        rest = sum(g["count"] for g in groups[limit:])
        out.append(f"{indent}... {len(groups) - limit} more reasons ({rest} failures); see the summary JSON")
    return out
