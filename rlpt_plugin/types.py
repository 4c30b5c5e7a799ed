"""Small protocols shared across stages (no torch, no megatron)."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable


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
