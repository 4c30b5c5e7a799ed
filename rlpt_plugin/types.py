"""Small protocols shared across stages (no torch, no megatron)."""

from __future__ import annotations

import operator
from typing import Any, Iterable, Protocol, Sequence, runtime_checkable


def token_ids(name: str, ids: Iterable[Any]) -> tuple[int, ...]:
    """``ids`` as a tuple of non-negative ints; a bool, float or negative id is a ValueError
    naming ``name[position]`` (floats would silently truncate)."""
    out: list[int] = []
    for pos, tok in enumerate(ids):
        if isinstance(tok, bool):
            raise ValueError(f"{name}[{pos}] must be an int token id, got bool {tok!r}")
        try:
            value = operator.index(tok)
        except TypeError:
            raise ValueError(f"{name}[{pos}] must be an int token id, got {tok!r}") from None
        if value < 0:
            raise ValueError(f"{name}[{pos}] must be a token id >= 0, got {value}")
        out.append(value)
    return tuple(out)


@runtime_checkable
class Tokenizer(Protocol):
    """What the data pipeline and the teacher side need from a tokenizer.

    ``fingerprint`` identifies the vocabulary and normalisation exactly (a stored dataset opened
    with a tokenizer of another fingerprint is an error); ``name`` is for humans.
    """

    name: str
    fingerprint: str
    vocab_size: int
    eod_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...
