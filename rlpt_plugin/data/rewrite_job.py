"""``rlpt rewrite``: corpus -> rewritten store, sharded, resumable, cached.

Windows of this shard are processed in fixed-size chunks, in a deterministic order. Each
finished chunk is saved atomically as a part file (``<store>.parts/part-000042.npz``); a rerun
of the same command skips finished parts, and the teacher-response cache makes the chunk that
was in flight at a kill cost nothing the second time. When every chunk is done, the parts are
merged, in order, into the store (rlpt_plugin/megatron/data/rewritten_store.py), and the parts are
deleted. Nothing written depends on wall time or on where the run was interrupted, so a killed
and resumed run ends with a store byte-identical to an uninterrupted one.

Failures are never just a count: every window's error message is kept in its part file, and the
summary (console and JSON) and the manifest list the distinct reasons with counts and an
example each (rlpt_plugin/teacher/failures.py). A teacher that rejects the credentials (HTTP
401 / 403) stops the job at the first chunk with the server's reason: no later request could
succeed, and a store of failures would cost the whole corpus in requests for nothing.

Tasks: the machinery above (shards, chunked parts, resume, cache, failure accounting, summary)
is shared by every rewrite task; what differs is the task object: its units (suffix: windows;
think: corpus chunks, rlpt_plugin/data/think_job.py), the inputs it sends the rewriter, the
arrays of its part files and the store it writes. :class:`SuffixTask` is the default.

Shards: ``--shard i/n`` keeps the documents whose corpus index is i modulo n, so n jobs (a
Slurm array, several hosts) cover a corpus with no overlap; each writes its own store, and the
loader blends stores.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from rlpt_plugin.data.corpus import ReadStats, open_corpus, shard_filter
from rlpt_plugin.data.windows import Window, WindowSpec, WindowStats, make_windows
from rlpt_plugin.teacher.failures import FailureTally, is_auth_failure, reason_lines
from rlpt_plugin.teacher.rewriter import RewriteInput, RewriteOutput
from rlpt_plugin.types import Tokenizer

STATUSES = ("rewritten", "copied", "refused", "empty", "failed")
_NO_RECORD = "no reason recorded (part written by an older rlpt version)"


class TeacherRejectedError(ValueError):
    """The teacher refused our credentials (HTTP 401 / 403); the job cannot make progress."""


@dataclass(frozen=True, kw_only=True)
class RewriteJob:
    """What to rewrite and where; everything that determines the store's content."""

    corpus: tuple[str, ...]
    out_dir: Path
    window_spec: WindowSpec | None = None
    """The suffix task's windows; exactly one of ``window_spec`` and ``think_spec`` is set."""
    think_spec: Any = None
    """The think task's chunks (rlpt_plugin/data/think_job.py: ThinkSpec)."""
    field: str = "text"
    shard: int = 0
    num_shards: int = 1
    chunk_size: int = 256

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.num_shards:
            raise ValueError(f"`--shard` must be i/n with 0 <= i < n, but is {self.shard}/{self.num_shards}")
        if self.chunk_size < 1:
            raise ValueError(f"`chunk_size` must be >= 1, but is {self.chunk_size}")
        if (self.window_spec is None) == (self.think_spec is None):
            raise ValueError("a RewriteJob needs exactly one of `window_spec` (suffix task) and "
                             "`think_spec` (think task)")

    @property
    def task(self) -> str:
        return "suffix" if self.window_spec is not None else "think"

    @property
    def parts_dir(self) -> Path:
        return self.out_dir.with_name(self.out_dir.name + ".parts")


@dataclass
class Summary:
    task: str = "suffix"
    windows: int = 0
    resumed_windows: int = 0
    statuses: dict[str, int] = field(default_factory=lambda: {s: 0 for s in STATUSES})
    cache_hits: int = 0
    mean_overlap: float = 0.0
    read: dict[str, Any] = field(default_factory=dict)
    windowing: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: Distinct reasons of the failed windows: ``[{"reason", "count", "example"}]``, most first.
    failures: list[dict[str, Any]] = field(default_factory=list)
    #: The teacher's settings (endpoints redacted; never the key), as in the manifest.
    teacher: dict[str, Any] = field(default_factory=dict)
    #: Task-specific figures (think: thoughts, thought tokens); empty for the suffix task.
    extra: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        s = self.statuses
        rate = self.windows / self.seconds if self.seconds else 0.0
        failure_lines = []
        if self.failures:
            failure_lines = [f"failure reasons ({len(self.failures)} distinct):", *reason_lines(self.failures)]
        if self.task != "suffix":
            from rlpt_plugin.data.think_job import summary_lines

            return summary_lines(self, rate, failure_lines)
        return [
            f"windows: {self.windows} ({self.resumed_windows} from a previous run), "
            f"{rate:.1f} windows/s over {self.seconds:.1f} s",
            f"rewritten: {s['rewritten']}, copied unchanged: {s['copied']}, refused: {s['refused']}, "
            f"empty: {s['empty']}, failed: {s['failed']}",
            *failure_lines,
            f"token overlap between suffix and rewrite (mean over usable rewrites): {self.mean_overlap:.3f}",
            f"teacher cache hits: {self.cache_hits}",
            f"documents: {self.read.get('documents', 0)} read, "
            f"{sum(v for k, v in self.read.items() if k.startswith('skipped_'))} skipped "
            f"({', '.join(f'{k[8:]}={v}' for k, v in self.read.items() if k.startswith('skipped_') and v) or 'none'}), "
            f"{self.windowing.get('skipped_too_short', 0)} too short",
        ]


def shard_documents(job: Any, tokenizer: Tokenizer, read_stats: ReadStats) -> Iterator[tuple[int, Sequence[int]]]:
    """(corpus index, token ids) of every document of the job's shard, in corpus order (a
    pre-tokenized corpus keeps its ids; text is encoded with ``tokenizer``). Every task reads
    its documents through here."""
    docs = shard_filter(open_corpus(list(job.corpus), field=job.field, stats=read_stats),
                        job.shard, job.num_shards)
    for doc in docs:
        yield doc.index, doc.token_ids if doc.token_ids is not None else tokenizer.encode(doc.text)


def iter_windows(job: RewriteJob, tokenizer: Tokenizer, read_stats: ReadStats,
                 window_stats: WindowStats) -> Iterator[Window]:
    for index, ids in shard_documents(job, tokenizer, read_stats):
        windows = make_windows(index, ids, job.window_spec)
        window_stats.documents += 1
        if not windows:
            window_stats.skipped_too_short += 1
        window_stats.windows += len(windows)
        yield from windows


def _chunks(items: Iterator[Window], size: int) -> Iterator[list[Window]]:
    chunk: list[Window] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _flat(seqs: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.asarray([len(s) for s in seqs], dtype=np.int64)
    tokens = np.asarray([t for s in seqs for t in s], dtype=np.int32)
    return lengths, tokens


def _unflat(lengths: np.ndarray, tokens: np.ndarray) -> list[np.ndarray]:
    return np.split(tokens, np.cumsum(lengths)[:-1]) if len(lengths) else []


class SuffixTask:
    """The default task: each window's suffix rewritten (rlpt_plugin/teacher/rewriter.py)."""

    name = "suffix"
    statuses = STATUSES
    sequences = ("prefix", "original", "rewrite")  # token sequences of a part file

    def units(self, job: RewriteJob, tokenizer: Tokenizer, read_stats: ReadStats,
              window_stats: WindowStats) -> Iterator[Window]:
        return iter_windows(job, tokenizer, read_stats, window_stats)

    def inputs(self, chunk: Sequence[Window], tokenizer: Tokenizer) -> list[RewriteInput]:
        return [RewriteInput(window_id=w.window_id, prefix_text=tokenizer.decode(w.prefix_ids),
                             suffix_text=tokenizer.decode(w.suffix_ids), suffix_ids=tuple(w.suffix_ids))
                for w in chunk]

    def arrays(self, windows: Sequence[Window], outputs: Sequence[RewriteOutput]) -> dict[str, Any]:
        """Per-unit arrays and token sequences (flattened by ``_save_part``)."""
        return {"doc_index": np.asarray([w.doc_index for w in windows], dtype=np.int64),
                "window_index": np.asarray([w.window_index for w in windows], dtype=np.int32),
                "overlap": np.asarray([o.overlap for o in outputs], dtype=np.float64),
                "prefix": [w.prefix_ids for w in windows], "original": [w.suffix_ids for w in windows],
                "rewrite": [o.token_ids for o in outputs]}

    def tallied(self, status: str) -> bool:
        """Whether a unit of this status is a failure with a reason in the tally."""
        return status == "failed"

    def summarise(self, parts: list[dict[str, Any]], summary: Summary) -> None:
        overlaps = [float(o) for part in parts for code, o in zip(part["status"], part["overlap"])
                    if STATUSES[int(code)] in ("rewritten", "copied")]
        summary.mean_overlap = float(np.mean(overlaps)) if overlaps else 0.0

    def finalize(self, job: RewriteJob, tokenizer: Tokenizer, teacher: dict[str, Any],
                 parts: list[dict[str, Any]], summary: Summary) -> None:
        _finalize(job, tokenizer, teacher, parts, summary)


def task_for(job: RewriteJob) -> Any:
    """The task object of a job (SuffixTask, or think_job.ThinkTask)."""
    if job.task == "suffix":
        return SuffixTask()
    from rlpt_plugin.data.think_job import ThinkTask

    return ThinkTask(job.think_spec)


def _save_part(path: Path, task: Any, units: Sequence[Any], outputs: Sequence[Any]) -> None:
    arrays: dict[str, np.ndarray] = {
        "status": np.asarray([task.statuses.index(o.status) for o in outputs], dtype=np.uint8),
        "cached": np.asarray([o.cached for o in outputs], dtype=bool),
        # Unicode (not object) array: loads without pickle.
        "error": np.asarray([o.error or "" for o in outputs], dtype=str),
    }
    for name, value in task.arrays(units, outputs).items():
        if name in task.sequences:
            arrays[f"{name}_len"], arrays[f"{name}_tok"] = _flat(value)
        else:
            arrays[name] = value
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)  # atomic: a part exists whole or not at all


def _load_part(path: Path, task: Any) -> dict[str, Any]:
    with np.load(path) as z:
        part = {k: z[k] for k in z.files}
    if "error" not in part:
        part["error"] = np.asarray([_NO_RECORD] * len(part["status"]), dtype=str)
    for name in task.sequences:
        part[name] = _unflat(part.pop(f"{name}_len"), part.pop(f"{name}_tok"))
    return part


async def _rewrite_all(job: RewriteJob, tokenizer: Tokenizer, rewriter: Any, summary: Summary,
                       read_stats: ReadStats, window_stats: WindowStats, progress: Any) -> int:
    task = task_for(job)
    job.parts_dir.mkdir(parents=True, exist_ok=True)
    _check_resumed_job(job)
    num_parts = 0
    for k, chunk in enumerate(_chunks(task.units(job, tokenizer, read_stats, window_stats), job.chunk_size)):
        num_parts = k + 1
        path = job.parts_dir / f"part-{k:06d}.npz"
        if path.exists():
            summary.resumed_windows += len(chunk)
        else:
            outputs = await rewriter.rewrite(task.inputs(chunk, tokenizer))
            _check_credentials(k, outputs)
            _save_part(path, task, chunk, outputs)
        if progress is not None:
            progress.update(len(chunk))
    return num_parts


def _job_identity(job: RewriteJob) -> dict[str, Any]:
    spec = job.window_spec if job.window_spec is not None else job.think_spec
    return {"task": job.task, "spec": asdict(spec), "corpus": list(job.corpus), "field": job.field,
            "shard": [job.shard, job.num_shards], "chunk_size": job.chunk_size}


def _check_resumed_job(job: RewriteJob) -> None:
    """Parts of an interrupted run are reused only by the same job: a rerun with another task,
    spec, corpus, shard or part size would mix two jobs' parts into one store."""
    path = job.parts_dir / "job.json"
    mine = _job_identity(job)
    if path.exists():
        theirs = json.loads(path.read_text())
        if theirs != mine:
            differ = sorted(k for k in mine if theirs.get(k) != mine[k])
            raise ValueError(f"{job.parts_dir} holds the parts of an interrupted run of another job "
                             f"(it differs in {', '.join(differ)}): rerun that job's command to finish it, "
                             "or delete the folder to start over")
    else:
        path.write_text(json.dumps(mine, sort_keys=True) + "\n")


def _check_credentials(chunk_index: int, outputs: Sequence[Any]) -> None:
    """Raise TeacherRejectedError when the teacher rejected our credentials for any window."""
    rejected = [o for o in outputs if o.status == "failed" and is_auth_failure(o.error)]
    if rejected:
        raise TeacherRejectedError(
            f"the teacher rejected the credentials for {len(rejected)} of {len(outputs)} windows of chunk "
            f"{chunk_index}: {rejected[0].error}. Nothing was written for this chunk; a rerun resumes "
            "here. Check the API key (rlpt rewrite --api-key-env NAME reads it from $NAME).")


async def _run_and_close(job: RewriteJob, tokenizer: Tokenizer, rewriter: Any, summary: Summary,
                         read_stats: ReadStats, window_stats: WindowStats, progress: Any) -> int:
    """``_rewrite_all``, then close the rewriter's client on this loop (the loop it used)."""
    try:
        return await _rewrite_all(job, tokenizer, rewriter, summary, read_stats, window_stats, progress)
    finally:
        close = getattr(rewriter, "aclose", None)  # oracle rewriters hold no client
        if close is not None:
            await close()


def run_rewrite(job: RewriteJob, tokenizer: Tokenizer, rewriter: Any, teacher: dict[str, Any],
                *, show_progress: bool = True) -> Summary:
    """Run (or resume) a job to completion; returns its summary. ``teacher`` describes the
    teacher for the manifest (model id, template version, sampling parameters). ``rewriter``
    is the task's: a Rewriter (or OracleRewriter) for suffix, a ThinkRewriter (or a local
    annotator, rlpt_plugin/teacher/think_rewriter.py) for think."""
    task = task_for(job)
    summary = Summary(task=task.name, statuses={s: 0 for s in task.statuses})
    read_stats, window_stats = ReadStats(), WindowStats()
    began = time.perf_counter()
    progress = None
    if show_progress:
        from tqdm import tqdm

        progress = tqdm(unit="window" if task.name == "suffix" else "chunk", desc=f"{task.name} shard {job.shard}/{job.num_shards}",
                        dynamic_ncols=True)
    try:
        num_parts = asyncio.run(_run_and_close(job, tokenizer, rewriter, summary, read_stats,
                                               window_stats, progress))
    finally:
        if progress is not None:
            progress.close()
    parts = [_load_part(job.parts_dir / f"part-{k:06d}.npz", task) for k in range(num_parts)]
    statuses: Counter[str] = Counter()
    tally = FailureTally()
    for part in parts:
        for code, cached, error in zip(part["status"], part["cached"], part["error"]):
            status = task.statuses[int(code)]
            statuses[status] += 1
            summary.cache_hits += int(cached)
            if task.tallied(status):
                tally.add(str(error))
    summary.failures = tally.as_list()
    summary.teacher = teacher
    summary.windows = sum(statuses.values())
    summary.statuses.update(statuses)
    task.summarise(parts, summary)
    summary.read = read_stats.as_dict()
    summary.windowing = {"documents": window_stats.documents, "windows": window_stats.windows,
                         "skipped_too_short": window_stats.skipped_too_short}
    task.finalize(job, tokenizer, teacher, parts, summary)
    summary.seconds = time.perf_counter() - began
    return summary


def _finalize(job: RewriteJob, tokenizer: Tokenizer, teacher: dict[str, Any],
              parts: list[dict[str, Any]], summary: Summary) -> None:
    from rlpt_plugin.megatron.data.rewritten_store import write_store

    def records() -> Iterator[tuple]:
        for part in parts:
            for i in range(len(part["status"])):
                yield (int(part["doc_index"][i]), int(part["window_index"][i]), part["prefix"][i],
                       part["original"][i], part["rewrite"][i], STATUSES[int(part["status"][i])])

    manifest = {
        "source": {"corpus": list(job.corpus), "field": job.field, "shard": job.shard,
                   "num_shards": job.num_shards},
        "tokenizer": {"name": tokenizer.name, "fingerprint": tokenizer.fingerprint,
                      "vocab_size": tokenizer.vocab_size},
        "suffix_length": job.window_spec.suffix_length,
        "window_spec": asdict(job.window_spec),
        "teacher": teacher,
        "read": summary.read,
        "windowing": summary.windowing,
        "mean_overlap": round(summary.mean_overlap, 6),
        "failures": summary.failures,
    }
    write_store(job.out_dir, records(), manifest)
    shutil.rmtree(job.parts_dir, ignore_errors=True)


def summary_json(summary: Summary) -> str:
    return json.dumps(asdict(summary), indent=2, sort_keys=True)
