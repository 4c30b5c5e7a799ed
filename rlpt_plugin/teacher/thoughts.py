"""Thoughts inside a teacher's augmented chunk: tag normalisation and the strip check (pure text).

The thinking task (``rlpt rewrite --task think``) asks a teacher to copy a corpus chunk and
insert thoughts where they help: ``x1 <think>t1</think> x2 <think>t2</think> x3 ...``. This
module turns the teacher's answer into the original text pieces ``x_i`` and the thought bodies
``t_i``, or says why it cannot, with one of :data:`REASONS`.

**Tags.** Teachers use different tag names. Every opening tag ``<NAME>`` and closing tag
``</NAME>`` with NAME in :data:`TAG_NAMES` (think, thinking, thought, thoughts, reasoning),
case-insensitive, spaces allowed inside the angle brackets (``< Think >``, ``</ thought>``), is
the same tag: the trained text always uses one pair, :data:`THINK_OPEN` / :data:`THINK_CLOSE`.
An opener may be closed by any closer of the set (``<thinking> ... </think>``). Other angle
brackets (``<b>``, ``a < b``) are ordinary text. Thoughts do not nest.

**Whitespace.** A thought is inserted as a block; the teacher usually puts a space or a line
break on both sides of it. The rule: when the text before the opening tag is empty or ends with
whitespace, the run of whitespace right after the closing tag belongs to the thought and is
removed with it (``"a <think>t</think> b"`` -> ``"a b"``; ``"a\\n<think>t</think>\\nb"`` ->
``"a\\nb"``); otherwise nothing after the closing tag is removed (``"a<think>t</think> b"`` ->
``"a b"``). Leading and trailing whitespace of the whole answer are ignored (servers add a
final newline), and so is the original's own (it stays in the stored token ids, which are never
re-encoded). Everything in between must match the original EXACTLY, character for character:
a teacher that fixed a typo, changed a space or dropped a word changed the text.

**Reasons** a chunk is dropped (the part before ``:`` in :class:`ThoughtError`'s message; the
text quoted from the answer goes on later lines, so the failure tally, which keys on the first
line, groups by reason): ``unbalanced_tags`` (a closer without opener, a second opener
inside a thought, a thought never closed), ``empty_thought`` (a pair around whitespace only),
``no_thoughts`` (no tag at all: nothing to train beyond the raw text), ``thoughts_changed_text``
(the stripped answer differs from the original; the message gives the first difference).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG_NAMES: tuple[str, ...] = ("think", "thinking", "thought", "thoughts", "reasoning")
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
REASONS: tuple[str, ...] = ("unbalanced_tags", "empty_thought", "no_thoughts", "thoughts_changed_text")
_TAG_RE = re.compile(r"<\s*(/?)\s*(" + "|".join(TAG_NAMES) + r")\s*>", re.IGNORECASE)
_LEADING_WS_RE = re.compile(r"\s*")


class ThoughtError(ValueError):
    """An answer whose thoughts cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        assert reason in REASONS, reason
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class Thought:
    """One thought: its body (surrounding whitespace removed) and where it goes in the
    ORIGINAL text (a character offset into the original chunk, 0..len(original))."""

    offset: int
    body: str

    def text(self) -> str:
        """The thought as trained, with the one normalised tag pair."""
        return f"{THINK_OPEN} {self.body} {THINK_CLOSE}"


def normalise_tags(text: str) -> str:
    """``text`` with every tag variant of :data:`TAG_NAMES` replaced by the one pair."""
    return _TAG_RE.sub(lambda m: THINK_CLOSE if m.group(1) else THINK_OPEN, text)


def split_thoughts(answer: str) -> tuple[str, list[tuple[int, str]]]:
    """The answer without its thoughts, and ``(offset into that text, body)`` per thought.

    Applies the whitespace rule of the module docstring; raises :class:`ThoughtError`
    (``unbalanced_tags`` / ``empty_thought``) for a malformed answer. No tag at all is not an
    error here: the thought list is empty.
    """
    pieces: list[str] = []
    kept = 0  # characters of stripped text so far
    last_char = ""  # the last character of the stripped text so far ("" at the start)
    thoughts: list[tuple[int, str]] = []
    pos = 0
    open_at: int | None = None
    body_start = 0
    for match in _TAG_RE.finditer(answer):
        closing = bool(match.group(1))
        if open_at is None:
            if closing:
                raise ThoughtError("unbalanced_tags", f"a closing tag at character {match.start()} without "
                                                      f"an opening tag\ntag: {match.group(0)!r}")
            piece = answer[pos:match.start()]
            pieces.append(piece)
            kept += len(piece)
            last_char = piece[-1] if piece else last_char
            open_at, body_start = match.start(), match.end()
            continue
        if not closing:
            raise ThoughtError("unbalanced_tags", f"an opening tag at character {match.start()} inside the "
                                                  f"thought opened at {open_at}\ntag: {match.group(0)!r}")
        body = answer[body_start:match.start()].strip()
        if not body:
            raise ThoughtError("empty_thought", f"the thought at character {open_at} is empty")
        thoughts.append((kept, body))
        pos = match.end()
        if not last_char or last_char.isspace():  # the block's own trailing whitespace goes with it
            pos = _LEADING_WS_RE.match(answer, pos).end()
        open_at = None
    if open_at is not None:
        raise ThoughtError("unbalanced_tags", f"the thought opened at character {open_at} is never closed")
    pieces.append(answer[pos:])
    return "".join(pieces), thoughts


def parse_thoughts(answer: str, original: str) -> list[Thought]:
    """The thoughts of ``answer``, placed in ``original``; :class:`ThoughtError` unless removing
    them gives back ``original`` exactly (edges' whitespace aside, module docstring)."""
    stripped, found = split_thoughts(answer)
    if not found:
        raise ThoughtError("no_thoughts", "the answer has no thought tags")
    core = original.strip()
    lead = len(original) - len(original.lstrip())
    answer_lead = len(stripped) - len(stripped.lstrip())
    got = stripped.strip()
    if got != core:
        at = next((i for i, (a, b) in enumerate(zip(got, core)) if a != b), min(len(got), len(core)))
        raise ThoughtError("thoughts_changed_text",
                           f"without its thoughts the answer differs from the chunk at character {at} "
                           f"({len(got)} vs {len(core)} characters)\n"
                           f"answer: {got[max(0, at - 20):at + 20]!r}\nchunk:  {core[max(0, at - 20):at + 20]!r}")
    placed = []
    for offset, body in found:
        inner = min(max(0, offset - answer_lead), len(core))
        # A thought after the last character sits after the original's trailing whitespace.
        placed.append(Thought(len(original) if inner == len(core) else lead + inner, body))
    return placed


def strip_thought_text(augmented: str) -> str:
    """The text of a trained sequence without its thoughts (the rule above); for readers."""
    return split_thoughts(augmented)[0]
