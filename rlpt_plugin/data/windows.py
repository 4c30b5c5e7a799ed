"""Seeded (prefix, suffix) windows over tokenized documents.

A window splits a document at token offset ``split``: the suffix is the next ``suffix_length``
tokens (what the teacher later rewrites), the prefix the tokens before it, truncated from the
left so that prefix + suffix fit a Megatron sample of ``seq_length + 1`` tokens.

Split points depend on ``(seed, doc_index, window_index)`` and the document only -- never on
shards, processes or the order documents are visited -- so a sharded or resumed job cuts
exactly the same windows. The draws come from sha256 rather than numpy or ``random`` so they
stay identical across library and Python versions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


class WindowSpecError(ValueError):
    """Every problem found in a :class:`WindowSpec`, one per line."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid window spec:\n  - " + "\n  - ".join(self.errors))


def _int_error(name: str, value: Any, minimum: int) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return f"`{name}` must be an integer, but is {value!r} instead."
    if value < minimum:
        return f"`{name}` must be >= {minimum}, but is {value!r} instead."
    return None


@dataclass(frozen=True, kw_only=True)
class WindowSpec:
    """How documents are cut into windows.

    ``suffix_length`` (N) tokens are rewritten; ``seq_length`` is the training sequence length
    (prefix + suffix must fit in ``seq_length + 1`` tokens, as Megatron samples carry one extra
    token for the shifted labels); a split leaves at least ``min_prefix_tokens`` of context;
    up to ``windows_per_doc`` distinct splits are drawn per document.
    """

    suffix_length: int = 128
    seq_length: int = 2048
    min_prefix_tokens: int = 16
    windows_per_doc: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        checks = (("suffix_length", 1), ("seq_length", 1), ("min_prefix_tokens", 1),
                  ("windows_per_doc", 1), ("seed", 0))
        errors = [e for name, low in checks if (e := _int_error(name, getattr(self, name), low))]
        if not errors and self.min_prefix_tokens + self.suffix_length > self.seq_length + 1:
            errors.append(
                f"`min_prefix_tokens` + `suffix_length` must be <= `seq_length` + 1 = "
                f"{self.seq_length + 1} (the window must fit one sample), but is "
                f"{self.min_prefix_tokens} + {self.suffix_length} = "
                f"{self.min_prefix_tokens + self.suffix_length} instead.")
        if errors:
            raise WindowSpecError(errors)

    @property
    def max_prefix_tokens(self) -> int:
        """Longest prefix kept: the rest of a ``seq_length + 1`` sample after the suffix."""
        return self.seq_length + 1 - self.suffix_length

    @property
    def min_document_tokens(self) -> int:
        """Shortest document that yields a window."""
        return self.min_prefix_tokens + self.suffix_length


@dataclass(frozen=True)
class Window:
    """One (prefix, suffix) cut of document ``doc_index`` at token offset ``split``."""

    doc_index: int
    window_index: int
    split: int
    prefix_ids: tuple[int, ...]
    suffix_ids: tuple[int, ...]

    @property
    def window_id(self) -> str:
        """Stable id, unique within a corpus: "{doc_index}:{window_index}"."""
        return f"{self.doc_index}:{self.window_index}"


def _draws(seed: int, doc_index: int, window_index: int, low: int, high: int) -> Iterator[int]:
    """Endless uniform draws from [low, high], seeded by (seed, doc_index, window_index) only.

    Reducing a 256-bit hash modulo the span biases it by at most span / 2**256: none in practice.
    """
    span = high - low + 1
    counter = 0
    while True:
        key = f"rlpt-window|{seed}|{doc_index}|{window_index}|{counter}".encode()
        yield low + int.from_bytes(hashlib.sha256(key).digest(), "big") % span
        counter += 1


def split_points(doc_index: int, num_tokens: int, spec: WindowSpec) -> list[int]:
    """The split offsets of a document of ``num_tokens`` tokens, in window-index order.

    Window ``w`` takes the first draw of its own stream that no earlier window of the document
    took, so splits are distinct. A document offering fewer candidate splits than
    ``windows_per_doc`` (``num_tokens - min_document_tokens + 1`` of them) gets one window per
    candidate; a document shorter than ``min_document_tokens`` gets none.
    """
    low, high = spec.min_prefix_tokens, num_tokens - spec.suffix_length
    if high < low:
        return []
    count = min(spec.windows_per_doc, high - low + 1)
    taken: list[int] = []
    seen: set[int] = set()
    for window_index in range(count):
        for split in _draws(spec.seed, doc_index, window_index, low, high):
            if split not in seen:
                break
        seen.add(split)
        taken.append(split)
    return taken


def make_windows(doc_index: int, token_ids: Sequence[int], spec: WindowSpec) -> list[Window]:
    """The windows of one document (``[]`` when it is too short; count it as skipped).

    The suffix is exactly ``spec.suffix_length`` tokens; the prefix is everything before the
    split, truncated from the left to ``spec.max_prefix_tokens`` (the tokens nearest the suffix
    are the context that matters).
    """
    if isinstance(doc_index, bool) or not isinstance(doc_index, int) or doc_index < 0:
        raise ValueError(f"`doc_index` must be an integer >= 0, but is {doc_index!r} instead.")
    tokens = tuple(int(t) for t in token_ids)
    windows = []
    for window_index, split in enumerate(split_points(doc_index, len(tokens), spec)):
        start = max(0, split - spec.max_prefix_tokens)
        windows.append(Window(doc_index=doc_index, window_index=window_index, split=split,
                              prefix_ids=tokens[start:split],
                              suffix_ids=tokens[split:split + spec.suffix_length]))
    return windows


@dataclass
class WindowStats:
    """Documents seen, windows cut and documents skipped for being too short."""

    documents: int = 0
    windows: int = 0
    skipped_too_short: int = 0

    def record(self, windows: Sequence[Window]) -> None:
        """Count one document's result of :func:`make_windows`."""
        self.documents += 1
        if windows:
            self.windows += len(windows)
        else:
            self.skipped_too_short += 1

    def merge(self, other: WindowStats) -> None:
        """Add another shard's counts to these."""
        self.documents += other.documents
        self.windows += other.windows
        self.skipped_too_short += other.skipped_too_short

    def as_dict(self) -> dict[str, int]:
        return {"documents": self.documents, "windows": self.windows,
                "skipped_too_short": self.skipped_too_short}
