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

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder

FORMAT = "rlpt-rewritten-store-v1"
PARTS = ("prefix", "original", "rewrite")
STATUSES = ("rewritten", "copied", "refused", "empty", "failed")
USABLE = frozenset({"rewritten", "copied"})  # statuses whose rewrite enters the candidate pool


class StoreMismatchError(ValueError):
    """A store was opened with settings other than the ones it was written with."""


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_store(out_dir: str | Path, windows: Iterable[tuple[int, int, Sequence[int], Sequence[int],
                                                             Sequence[int], str]],
                manifest: dict[str, Any]) -> dict[str, Any]:
    """Write a store from ``(doc_index, window_index, prefix, original, rewrite, status)``
    records, in order. ``manifest`` holds the provenance (source, tokenizer, N, teacher...);
    counts and checksums are added here. Returns the final manifest."""
    out = Path(out_dir)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    builders = {p: IndexedDatasetBuilder(str(tmp / f"{p}.bin"), dtype=np.int32) for p in PARTS}
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
        for part, ids in zip(PARTS, (prefix, original, rewrite)):
            builders[part].add_item(torch.tensor(list(ids), dtype=torch.int32))
            builders[part].end_document()
        doc_idx.append(doc_index)
        win_idx.append(window_index)
        status_codes.append(STATUSES.index(status))
        counts[status] += 1
    for part, builder in builders.items():
        builder.finalize(str(tmp / f"{part}.idx"))
    with (tmp / "windows.npz").open("wb") as f:
        np.savez(f, doc_index=np.asarray(doc_idx, dtype=np.int64),
                 window_index=np.asarray(win_idx, dtype=np.int32),
                 status=np.asarray(status_codes, dtype=np.uint8))
    files = sorted(p.name for p in tmp.iterdir())
    final = dict(manifest, format=FORMAT, num_windows=len(doc_idx), counts=counts,
                 checksums={name: _sha256(tmp / name) for name in files})
    (tmp / "manifest.json").write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return final


class RewrittenStore:
    """Read access to a store; ``expect_*`` arguments make a mismatched store an error."""

    def __init__(self, path: str | Path, *, expect_tokenizer: str | None = None,
                 expect_suffix_length: int | None = None):
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise StoreMismatchError(f"{self.path} is not a rewritten store (no manifest.json)")
        self.manifest = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise StoreMismatchError(f"{self.path}: format {self.manifest.get('format')!r}, "
                                     f"expected {FORMAT!r}")
        problems = []
        stored_tok = self.manifest["tokenizer"]["fingerprint"]
        if expect_tokenizer is not None and stored_tok != expect_tokenizer:
            problems.append(f"tokenizer fingerprint {stored_tok[:12]}... "
                            f"({self.manifest['tokenizer'].get('name')}) differs from the run's "
                            f"{expect_tokenizer[:12]}...")
        if expect_suffix_length is not None and self.manifest["suffix_length"] != expect_suffix_length:
            problems.append(f"suffix length N = {self.manifest['suffix_length']} differs from the "
                            f"run's {expect_suffix_length}")
        if problems:
            raise StoreMismatchError(f"store {self.path} does not match this run: " + "; ".join(problems))
        # An all-empty part (every rewrite failed) is a 0-byte .bin, which cannot be mmapped.
        self.parts = {p: IndexedDataset(str(self.path / p),
                                        mmap=(self.path / f"{p}.bin").stat().st_size > 0)
                      for p in PARTS}
        with np.load(self.path / "windows.npz") as arrays:
            self.doc_index = arrays["doc_index"]
            self.window_index = arrays["window_index"]
            self.status = arrays["status"]

    def __len__(self) -> int:
        return int(self.manifest["num_windows"])

    def verify(self) -> None:
        """Recompute every checksum (slow for large stores; a corrupted copy is an error)."""
        for name, expected in self.manifest["checksums"].items():
            if _sha256(self.path / name) != expected:
                raise StoreMismatchError(f"{self.path / name}: checksum mismatch (corrupted copy?)")

    def __getitem__(self, i: int) -> StoredWindow:
        status = STATUSES[int(self.status[i])]
        # Copies: a view into the mmap would outlive the store (a segfault once it is collected).
        rewrite = np.array(self.parts["rewrite"][i]) if status in USABLE else None
        return StoredWindow(index=i, doc_index=int(self.doc_index[i]),
                            window_index=int(self.window_index[i]), prefix=np.array(self.parts["prefix"][i]),
                            original=np.array(self.parts["original"][i]), rewrite=rewrite, status=status)
