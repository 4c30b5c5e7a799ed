"""The augmented (thinking) store: thought-augmented chunks as Megatron indexed datasets.

Layout of a store directory (``rlpt rewrite --task think``)::

    manifest.json                 format, task, source, tokenizer, chunking, teacher, outcome
                                  counts and failure reasons of the run, checksums
    tokens.bin / tokens.idx       the augmented chunk: original ids with the thought ids spliced in
    mask.bin / mask.idx           uint8, one per token of ``tokens``: 1 = thought token
    original.bin / original.idx   the chunk's original ids
    chunks.npz                    doc_index, chunk_index per stored chunk

Only chunks that passed the strip check are stored (the dropped ones are counted in the
manifest's ``outcomes`` and ``failures``). The original is recoverable from the store itself,
``tokens[mask == 0]``, and the reader checks that it equals ``original`` for every chunk it
reads (:meth:`ThinkStore.__getitem__`; :meth:`ThinkStore.check_all` checks the whole store and
runs once when the writer finishes). As in the rewritten store, everything is written to
``<dir>.tmp`` and renamed into place, and nothing depends on wall time: the same chunks give
byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rlpt_plugin.megatron.data.store_files import (StoreMismatchError, StoreWriter, open_manifest, open_parts,
                                                   tokenizer_mismatch, verify)

FORMAT = "rlpt-think-store-v1"
PARTS = ("tokens", "mask", "original")
_DTYPES = {"tokens": np.int32, "mask": np.uint8, "original": np.int32}


class ThinkStoreError(StoreMismatchError):
    """A think store that breaks its own contract (thoughts do not strip to the original)."""


@dataclass(frozen=True)
class ThinkChunk:
    """One stored chunk: the augmented ids, the thought mask (1 = thought) and the original."""

    index: int
    doc_index: int
    chunk_index: int
    tokens: np.ndarray
    mask: np.ndarray
    original: np.ndarray

    @property
    def num_thought_tokens(self) -> int:
        return int(self.mask.sum())


def strip_thoughts(tokens: Sequence[int] | np.ndarray, mask: Sequence[int] | np.ndarray) -> np.ndarray:
    """The ids that are not thought tokens, in order."""
    tokens, mask = np.asarray(tokens), np.asarray(mask)
    if tokens.shape != mask.shape:
        raise ThinkStoreError(f"tokens ({tokens.shape}) and mask ({mask.shape}) must have the same shape")
    return tokens[mask == 0]


def _check(where: str, tokens: Any, mask: Any, original: Any) -> None:
    kept = strip_thoughts(tokens, mask)
    if len(kept) != len(original) or not np.array_equal(kept, np.asarray(original)):
        raise ThinkStoreError(f"{where}: removing the thought tokens does not give back the original ids "
                              f"({len(kept)} ids left for an original of {len(original)})")
    if not np.isin(np.asarray(mask), (0, 1)).all():
        raise ThinkStoreError(f"{where}: the thought mask must hold 0 and 1 only")


def write_think_store(out_dir: str | Path, chunks: Iterable[tuple[int, int, Sequence[int], Sequence[int],
                                                                  Sequence[int]]],
                      manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a store from ``(doc_index, chunk_index, original, tokens, mask)`` records, in
    order; every record must strip to its original. Returns the final manifest."""
    writer = StoreWriter(out_dir, _DTYPES)
    doc_idx: list[int] = []
    chunk_idx: list[int] = []
    num_tokens = num_thought_tokens = 0
    for doc_index, chunk_index, original, tokens, mask in chunks:
        _check(f"chunk {doc_index}:{chunk_index}", tokens, mask, original)
        writer.add(tokens, mask, original)
        doc_idx.append(doc_index)
        chunk_idx.append(chunk_index)
        num_tokens += len(tokens)
        num_thought_tokens += int(np.sum(mask))
    index = {"doc_index": np.asarray(doc_idx, dtype=np.int64), "chunk_index": np.asarray(chunk_idx, dtype=np.int32)}
    return writer.finish("chunks", index, dict(manifest, format=FORMAT, num_chunks=len(doc_idx), num_tokens=num_tokens,
                                               num_thought_tokens=num_thought_tokens),
                         check=lambda tmp: ThinkStore(tmp).check_all())


class ThinkStore:
    """Read access; ``expect_tokenizer`` (a fingerprint) makes a store of another tokenizer an error."""

    def __init__(self, path: str | Path, *, expect_tokenizer: str | None = None) -> None:
        self.path = Path(path)
        self.manifest = open_manifest(self.path, FORMAT, "think store", "a store written by rlpt rewrite --task think")
        mismatch = tokenizer_mismatch(self.manifest, expect_tokenizer)
        if mismatch:
            raise StoreMismatchError(f"think store {self.path} does not match this run: {mismatch}")
        self.parts = open_parts(self.path, PARTS) if self.manifest["num_chunks"] else {}
        with np.load(self.path / "chunks.npz") as arrays:
            self.doc_index = arrays["doc_index"]
            self.chunk_index = arrays["chunk_index"]

    def __len__(self) -> int:
        return int(self.manifest["num_chunks"])

    def __getitem__(self, i: int) -> ThinkChunk:
        if not 0 <= i < len(self):
            raise IndexError(f"chunk {i} of a think store with {len(self)} chunks")
        # Copies: a view into the mmap would outlive the store (a segfault once it is closed).
        tokens, mask, original = (np.array(self.parts[p][i]) for p in PARTS)
        _check(f"{self.path} chunk {i}", tokens, mask, original)  # cheap: one pass over the chunk
        return ThinkChunk(index=i, doc_index=int(self.doc_index[i]), chunk_index=int(self.chunk_index[i]),
                          tokens=tokens, mask=mask, original=original)

    def check_all(self) -> None:
        """The strip check on every chunk (ThinkStoreError on the first that fails)."""
        for i in range(len(self)):
            self[i]

    def verify(self) -> None:
        """Recompute every checksum (a corrupted copy is an error)."""
        verify(self.path, self.manifest)
