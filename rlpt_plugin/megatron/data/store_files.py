"""What every store directory of the plugin shares (the rewritten store, the think store).

A store is a few *parts*, each a megatron-core ``IndexedDataset`` with one sequence per record
(``<part>.bin`` / ``<part>.idx``), an index of the records (``<name>.npz``) and ``manifest.json``:
the writer's provenance plus the format, the counts and a SHA-256 of every file. The writer
(:class:`StoreWriter`) fills ``<dir>.tmp`` and renames it into place only once it is complete (a
killed run leaves no half store), and nothing in it depends on wall time, so the same records
give byte-identical files. Readers open the manifest through :func:`open_manifest` (format and
tokenizer checked) and the parts through :func:`open_parts`; :func:`verify` recomputes the
checksums.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from megatron.core.datasets.indexed_dataset import IndexedDataset, IndexedDatasetBuilder


class StoreMismatchError(ValueError):
    """A store was opened with settings other than the ones it was written with."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class StoreWriter:
    """Records into ``<out_dir>.tmp``: one sequence per part per :meth:`add`, then :meth:`finish`."""

    def __init__(self, out_dir: str | Path, parts: dict[str, type]):
        self.out = Path(out_dir)
        self.tmp = self.out.with_name(self.out.name + ".tmp")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        self.builders = {p: IndexedDatasetBuilder(str(self.tmp / f"{p}.bin"), dtype=dtype)
                         for p, dtype in parts.items()}

    def add(self, *sequences: Sequence[int] | np.ndarray) -> None:
        """One record: a sequence for each part, in the order the parts were given."""
        for builder, ids in zip(self.builders.values(), sequences, strict=True):
            builder.add_item(torch.as_tensor(np.asarray(ids, dtype=np.int64)))
            builder.end_document()

    def finish(self, index_name: str, index: dict[str, np.ndarray], manifest: dict[str, Any],
               check: Callable[[Path], None] | None = None) -> dict[str, Any]:
        """Finalize the parts, write ``<index_name>.npz`` and the manifest (``manifest`` plus the
        checksums), run ``check`` on the complete temporary directory, rename it into place.
        Returns the final manifest."""
        for part, builder in self.builders.items():
            builder.finalize(str(self.tmp / f"{part}.idx"))
        with (self.tmp / f"{index_name}.npz").open("wb") as f:
            np.savez(f, **index)
        files = sorted(p.name for p in self.tmp.iterdir())
        final = dict(manifest, checksums={name: sha256(self.tmp / name) for name in files})
        (self.tmp / "manifest.json").write_text(json.dumps(final, indent=2, sort_keys=True) + "\n")
        if check is not None:
            check(self.tmp)
        if self.out.exists():
            shutil.rmtree(self.out)
        os.replace(self.tmp, self.out)
        return final


def open_manifest(path: Path, fmt: str, what: str, written_by: str = "") -> dict[str, Any]:
    """The manifest of the store at ``path``, which must be of format ``fmt`` (``what`` names the
    kind in the errors, ``written_by`` says which command writes it)."""
    manifest_path = path / "manifest.json"
    if not manifest_path.exists():
        raise StoreMismatchError(f"{path} is not a {what} (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != fmt:
        hint = f" ({written_by})" if written_by else ""
        raise StoreMismatchError(f"{path}: format {manifest.get('format')!r}, expected {fmt!r}{hint}")
    return manifest


def tokenizer_mismatch(manifest: dict[str, Any], expect: str | None) -> str | None:
    """How the store's tokenizer differs from the run's fingerprint ``expect``, or None."""
    stored = manifest["tokenizer"]["fingerprint"]
    if expect is None or stored == expect:
        return None
    return (f"tokenizer fingerprint {stored[:12]}... ({manifest['tokenizer'].get('name')}) differs from "
            f"the run's {expect[:12]}...")


def open_parts(path: Path, parts: Sequence[str]) -> dict[str, IndexedDataset]:
    """Each part's dataset, memory-mapped (an all-empty part is a 0-byte ``.bin``, which cannot be)."""
    return {p: IndexedDataset(str(path / p), mmap=(path / f"{p}.bin").stat().st_size > 0) for p in parts}


def verify(path: Path, manifest: dict[str, Any]) -> None:
    """Recompute every checksum (slow for large stores; a corrupted copy is an error)."""
    for name, expected in manifest["checksums"].items():
        if sha256(path / name) != expected:
            raise StoreMismatchError(f"{path / name}: checksum mismatch (corrupted copy?)")
