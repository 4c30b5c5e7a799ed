"""The think task of ``rlpt rewrite`` (``--task think``): corpus chunks -> augmented store.

Each document of the shard is tokenized and cut into consecutive chunks of ``chunk_length``
tokens (``--chunk-length``, default :data:`DEFAULT_CHUNK_LENGTH`); the last, shorter piece is
a chunk too when it has at least ``min_chunk_tokens`` tokens (``--min-chunk``), else it is
counted as too short. Chunk ``k`` of document ``d`` is ``d:k``; chunks depend on the document
only, so shards and resumes cut the same ones.

The teacher inserts thoughts into each chunk (rlpt_plugin/teacher/think_rewriter.py); the job
machinery (parts, resume, cache, failure accounting, summary) is rewrite_job.py's. Every chunk
that is not ``augmented`` is dropped from the store and counted in the failure tally with its
reason; the store (rlpt_plugin/megatron/data/think_store.py) holds the kept chunks only.
"""

from __future__ import annotations

import shutil
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from rlpt_plugin.data.corpus import ReadStats
from rlpt_plugin.data.rewrite_job import shard_documents
from rlpt_plugin.data.windows import WindowStats
from rlpt_plugin.teacher.think_rewriter import KEPT, THINK_STATUSES, ThinkInput, ThinkOutput
from rlpt_plugin.types import Tokenizer

DEFAULT_CHUNK_LENGTH = 512
"""Tokens per chunk. The report gives none; 512 leaves room for thoughts up to three times the
chunk's length in a 2,048-token training sequence."""
DEFAULT_MIN_CHUNK = 32


@dataclass(frozen=True, kw_only=True)
class ThinkSpec:
    """How documents are cut into chunks for the think task."""

    chunk_length: int = DEFAULT_CHUNK_LENGTH
    min_chunk_tokens: int = DEFAULT_MIN_CHUNK

    def __post_init__(self) -> None:
        errors = []
        for name in ("chunk_length", "min_chunk_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                errors.append(f"`--{name.replace('_', '-').replace('-tokens', '')}` must be an integer >= 1, "
                              f"but is {value!r} instead.")
        if not errors and self.min_chunk_tokens > self.chunk_length:
            errors.append(f"`--min-chunk` ({self.min_chunk_tokens}) must be <= `--chunk-length` "
                          f"({self.chunk_length}).")
        if errors:
            raise ValueError(" ".join(errors))


@dataclass(frozen=True)
class Chunk:
    doc_index: int
    chunk_index: int
    token_ids: list[int]

    @property
    def chunk_id(self) -> str:
        return f"{self.doc_index}:{self.chunk_index}"


def make_chunks(doc_index: int, ids: Sequence[int], spec: ThinkSpec) -> list[Chunk]:
    """Consecutive chunks of ``spec.chunk_length`` tokens; a short tail only when long enough."""
    out = []
    for k, start in enumerate(range(0, len(ids), spec.chunk_length)):
        piece = list(ids[start:start + spec.chunk_length])
        if len(piece) >= spec.min_chunk_tokens:
            out.append(Chunk(doc_index, k, piece))
    return out


class ThinkTask:
    """The think task's side of rewrite_job's machinery (see SuffixTask there)."""

    name = "think"
    statuses = THINK_STATUSES
    sequences = ("original", "augmented", "mask")

    def __init__(self, spec: ThinkSpec) -> None:
        self.spec = spec

    def units(self, job: Any, tokenizer: Tokenizer, read_stats: ReadStats,
              window_stats: WindowStats) -> Iterator[Chunk]:
        for index, ids in shard_documents(job, tokenizer, read_stats):
            chunks = make_chunks(index, ids, self.spec)
            window_stats.documents += 1
            window_stats.skipped_too_short += (-(-len(ids) // self.spec.chunk_length)) - len(chunks) \
                if ids else 1
            window_stats.windows += len(chunks)
            yield from chunks

    def inputs(self, chunk: Sequence[Chunk], tokenizer: Tokenizer) -> list[ThinkInput]:
        return [ThinkInput(c.chunk_id, tuple(c.token_ids), tokenizer.decode(c.token_ids)) for c in chunk]

    def arrays(self, chunks: Sequence[Chunk], outputs: Sequence[ThinkOutput]) -> dict[str, Any]:
        return {"doc_index": np.asarray([c.doc_index for c in chunks], dtype=np.int64),
                "chunk_index": np.asarray([c.chunk_index for c in chunks], dtype=np.int32),
                "num_thoughts": np.asarray([o.num_thoughts for o in outputs], dtype=np.int32),
                "original": [c.token_ids for c in chunks], "augmented": [o.token_ids for o in outputs],
                "mask": [o.thought_mask for o in outputs]}

    def tallied(self, status: str) -> bool:
        return status != KEPT  # every dropped chunk has a reason

    def summarise(self, parts: list[dict[str, Any]], summary: Any) -> None:
        kept = [(int(n), int(np.sum(m)), len(o)) for part in parts
                for code, n, m, o in zip(part["status"], part["num_thoughts"], part["mask"], part["original"])
                if THINK_STATUSES[int(code)] == KEPT]
        summary.extra = {"kept_chunks": len(kept), "thoughts": sum(k[0] for k in kept),
                         "thought_tokens": sum(k[1] for k in kept), "original_tokens": sum(k[2] for k in kept)}

    def finalize(self, job: Any, tokenizer: Tokenizer, teacher: dict[str, Any],
                 parts: list[dict[str, Any]], summary: Any) -> None:
        from rlpt_plugin.megatron.data.think_store import write_think_store

        def records() -> Iterator[tuple]:
            for part in parts:
                for i in range(len(part["status"])):
                    if THINK_STATUSES[int(part["status"][i])] == KEPT:
                        yield (int(part["doc_index"][i]), int(part["chunk_index"][i]), part["original"][i],
                               part["augmented"][i], part["mask"][i])

        manifest = {
            "task": "think",
            "source": {"corpus": list(job.corpus), "field": job.field, "shard": job.shard,
                       "num_shards": job.num_shards},
            "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint,
                          "vocab_size": tokenizer.vocab_size},
            "think_spec": asdict(self.spec),
            "teacher": teacher,
            "read": summary.read,
            "chunking": summary.windowing,
            "outcomes": dict(summary.statuses),
            "thoughts": summary.extra,
            "failures": summary.failures,
        }
        write_think_store(job.out_dir, records(), manifest)
        shutil.rmtree(job.parts_dir, ignore_errors=True)


def summary_lines(summary: Any, rate: float, failure_lines: list[str]) -> list[str]:
    """Console lines of a think run (rewrite_job.Summary.lines)."""
    s, x = summary.statuses, summary.extra
    dropped = ", ".join(f"{k}={v}" for k, v in s.items() if k != KEPT and v) or "none"
    share = x.get("thought_tokens", 0) / max(1, x.get("thought_tokens", 0) + x.get("original_tokens", 0))
    return [
        f"chunks: {summary.windows} ({summary.resumed_windows} from a previous run), "
        f"{rate:.1f} chunks/s over {summary.seconds:.1f} s",
        f"augmented (kept): {s.get(KEPT, 0)}, dropped: {summary.windows - s.get(KEPT, 0)} ({dropped})",
        *failure_lines,
        f"thoughts: {x.get('thoughts', 0)}, thought tokens: {x.get('thought_tokens', 0)} "
        f"({share:.3f} of the kept tokens)",
        f"teacher cache hits: {summary.cache_hits}",
        f"documents: {summary.read.get('documents', 0)} read, "
        f"{sum(v for k, v in summary.read.items() if k.startswith('skipped_'))} skipped, "
        f"{summary.windowing.get('skipped_too_short', 0)} chunks too short",
    ]
