"""The rewritten store: (prefix, original suffix, rewrite) per window, as Megatron datasets.

Layout of a store directory::

    manifest.json                 format, source, tokenizer, N, teacher, template, counts, checksums
    prefix.bin / prefix.idx       megatron-core IndexedDataset, one sequence per window
    original.bin / original.idx   the original suffix (exactly N tokens)
    rewrite.bin / rewrite.idx     the teacher's rewrite (<= N tokens; EMPTY when status is not
                                  rewritten/copied, so the three stay aligned by index)
    windows.npz                   doc_index, window_index, status (uint8) per window

Everything is written to ``<dir>.tmp`` and renamed into place, and nothing in it depends on wall
time, so writing the same windows twice gives byte-identical files. Opening a store with a
tokenizer or suffix length other than the run's is a :class:`StoreMismatchError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from rlpt_plugin.megatron.data.store_files import (StoreMismatchError, StoreWriter, open_manifest, open_parts,
                                                   tokenizer_mismatch, verify)

FORMAT = "rlpt-rewritten-store-v1"
PARTS = ("prefix", "original", "rewrite")
STATUSES = ("rewritten", "copied", "refused", "empty", "failed")
USABLE = frozenset({"rewritten", "copied"})  # statuses whose rewrite enters the candidate pool
__all__ = ["FORMAT", "PARTS", "STATUSES", "USABLE", "RewrittenStore", "StoreMismatchError", "StoredWindow",
           "write_store"]


@dataclass(frozen=True)
class StoredWindow:
    """One window of a store, as the candidate stage consumes it."""

    index: int
    doc_index: int
    window_index: int
    prefix: np.ndarray
    original: np.ndarray
    rewrite: np.ndarray | None  # None when the teacher gave no usable rewrite
    status: str


def write_store(out_dir: str | Path, windows: Iterable[tuple[int, int, Sequence[int], Sequence[int],
                                                             Sequence[int], str]],
                manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a store from ``(doc_index, window_index, prefix, original, rewrite, status)``
    records, in order. ``manifest`` holds the provenance (source, tokenizer, N, teacher...);
    counts and checksums are added here. Returns the final manifest."""
    writer = StoreWriter(out_dir, {p: np.int32 for p in PARTS})
    doc_idx: list[int] = []
    win_idx: list[int] = []
    status_codes: list[int] = []
    counts = {s: 0 for s in STATUSES}
    n = manifest["suffix_length"]
    for doc_index, window_index, prefix, original, rewrite, status in windows:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, but is {status!r}")
        if len(original) != n:
            raise ValueError(f"window {doc_index}:{window_index}: the original suffix must have "
                             f"{n} tokens, but has {len(original)}")
        if status not in USABLE and len(rewrite):
            raise ValueError(f"window {doc_index}:{window_index}: a {status} rewrite must be empty")
        writer.add(prefix, original, rewrite)
        doc_idx.append(doc_index)
        win_idx.append(window_index)
        status_codes.append(STATUSES.index(status))
        counts[status] += 1
    index = {"doc_index": np.asarray(doc_idx, dtype=np.int64), "window_index": np.asarray(win_idx, dtype=np.int32),
             "status": np.asarray(status_codes, dtype=np.uint8)}
    return writer.finish("windows", index, dict(manifest, format=FORMAT, num_windows=len(doc_idx), counts=counts))


class RewrittenStore:
    """Read access to a store; ``expect_*`` arguments make a mismatched store an error."""

    def __init__(self, path: str | Path, *, expect_tokenizer: str | None = None,
                 expect_suffix_length: int | None = None):
        self.path = Path(path)
        self.manifest = open_manifest(self.path, FORMAT, "rewritten store")
        problems = [p for p in [tokenizer_mismatch(self.manifest, expect_tokenizer)] if p]
        if expect_suffix_length is not None and self.manifest["suffix_length"] != expect_suffix_length:
            problems.append(f"suffix length N = {self.manifest['suffix_length']} differs from the "
                            f"run's {expect_suffix_length}")
        if problems:
            raise StoreMismatchError(f"store {self.path} does not match this run: " + "; ".join(problems))
        self.parts = open_parts(self.path, PARTS)
        with np.load(self.path / "windows.npz") as arrays:
            self.doc_index = arrays["doc_index"]
            self.window_index = arrays["window_index"]
            self.status = arrays["status"]

    def __len__(self) -> int:
        return int(self.manifest["num_windows"])

    def verify(self) -> None:
        """Recompute every checksum (slow for large stores; a corrupted copy is an error)."""
        verify(self.path, self.manifest)

    def __getitem__(self, i: int) -> StoredWindow:
        status = STATUSES[int(self.status[i])]
        # Copies: a view into the mmap would outlive the store (a segfault once it is collected).
        rewrite = np.array(self.parts["rewrite"][i]) if status in USABLE else None
        return StoredWindow(index=i, doc_index=int(self.doc_index[i]),
                            window_index=int(self.window_index[i]), prefix=np.array(self.parts["prefix"][i]),
                            original=np.array(self.parts["original"][i]), rewrite=rewrite, status=status)
