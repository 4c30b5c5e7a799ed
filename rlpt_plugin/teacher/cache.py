"""Content-addressed cache of teacher answers in one sqlite file (survives restarts).

The key is a sha256 over a canonical JSON of everything that determines the answer: the
teacher's model id, the prompt template's version, the sampling params and the full request
content (messages or prompt, and the assistant prefix). The request id is *not* part of the key:
two windows with the same text share an answer, and a restarted job finds its old answers under
new ids. Only ``ok`` results are stored; a failure is always retried by the next run.

Sampled answers (temperature > 0) are cached too: a rerun then reproduces the first run's data
exactly, which is what a resumable pipeline wants. Change the seed to get fresh samples.

Concurrency model: one process, async code on one event loop. Writes are synchronous and short
(one small row), so they never interleave; WAL mode lets a reader (e.g. a stats script) look at
the file while the job writes it. A lock guards the connection in case a caller uses threads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus, TeacherClient, check_results

KEY_SCHEMA = 1  # bump when the key's content changes, so old rows are never misread

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    finish_reason TEXT,
    model_id TEXT NOT NULL,
    template_version TEXT NOT NULL,
    created_at REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CacheEntry:
    """What is stored per key: the answer text and why generation stopped."""

    text: str
    finish_reason: str | None


class ResponseCache:
    """sqlite-backed map ``key -> CacheEntry`` with hit / miss counters."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"path must be a file path for the cache, got the directory {str(self.path)!r}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # isolation_level=None: autocommit, every put is durable on return (a crash loses at most
        # the answer being written, never the ones before it).
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute(_SCHEMA)
        self._closed = False
        self._entries_at_close = 0
        self.hits = 0
        self.misses = 0

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    def _open_conn(self) -> sqlite3.Connection:
        """The connection, or a RuntimeError naming the file when the cache was closed (a use
        after close is a lifecycle bug in the caller; sqlite's own error does not say which file)."""
        if self._closed:
            raise RuntimeError(f"ResponseCache({str(self.path)!r}) is closed; it cannot be used after close()")
        return self._conn

    @staticmethod
    def key_for(model_id: str, template_version: str, request: GenerationRequest) -> str:
        """sha256 hex over the canonical JSON of everything the answer depends on."""
        if not isinstance(model_id, str) or not model_id:
            raise ValueError(f"model_id must be a non-empty string, got {model_id!r}")
        if not isinstance(template_version, str) or not template_version:
            raise ValueError(f"template_version must be a non-empty string, got {template_version!r}")
        doc = {
            "schema": KEY_SCHEMA,
            "model_id": model_id,
            "template_version": template_version,
            "params": request.params.as_dict(),
            "request": request.content_dict(),
        }
        canonical = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    def get(self, key: str) -> CacheEntry | None:
        """The stored entry for ``key`` (counts a hit) or None (counts a miss)."""
        with self._lock:
            row = self._open_conn().execute("SELECT text, finish_reason FROM responses WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return CacheEntry(text=row[0], finish_reason=row[1])

    def put(self, key: str, result: GenerationResult, *, model_id: str = "", template_version: str = "") -> None:
        """Store an ``ok`` result under ``key``; the model / template are kept for inspection only.

        A failed result is a ValueError: caching it would turn a transient outage into a
        permanent answer.
        """
        if result.status is not GenerationStatus.OK or result.text is None:
            raise ValueError(f"result.status must be 'ok' to be cached, got {result.status.value!r}")
        with self._lock:
            self._open_conn().execute(
                "INSERT OR REPLACE INTO responses (key, text, finish_reason, model_id, template_version, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (key, result.text, result.finish_reason, model_id, template_version, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._open_conn().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def stats(self) -> dict[str, int]:
        """Hits and misses since this object was opened, and the number of stored rows (as of
        close() once closed, so end-of-run metrics can be read after the shutdown)."""
        entries = self._entries_at_close if self._closed else len(self)
        return {"hits": self.hits, "misses": self.misses, "entries": entries}

    def close(self) -> None:
        """Close the sqlite connection; idempotent, safe from any thread (the lock orders it
        after a get / put in progress). Later get / put / len raise RuntimeError."""
        with self._lock:
            if self._closed:
                return
            self._entries_at_close = int(self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0])
            self._closed = True
            self._conn.close()

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class CachedClient:
    """A ``TeacherClient`` that answers from ``cache`` when it can and asks ``client`` otherwise.

    Hits come back with ``cached=True`` and ``attempts=0``. Requests with identical content in one
    batch are sent once; the duplicates get the same answer marked ``cached=True`` (they did not
    cost a call). ``aclose`` closes the inner client; the cache belongs to the caller.
    """

    def __init__(self, client: TeacherClient, cache: ResponseCache, template_version: str) -> None:
        if not isinstance(template_version, str) or not template_version:
            raise ValueError(f"template_version must be a non-empty string, got {template_version!r}")
        self.client = client
        self.cache = cache
        self.template_version = template_version
        self.model_id = client.model_id

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Results in request order; only cache misses reach the inner client."""
        out: list[GenerationResult | None] = [None] * len(requests)
        keys = [self.cache.key_for(self.model_id, self.template_version, r) for r in requests]
        first_index: dict[str, int] = {}  # key -> index of the request sent for it
        to_send: list[int] = []
        for i, (req, key) in enumerate(zip(requests, keys)):
            if key in first_index:
                continue  # duplicate of an earlier miss in this batch: filled in below
            entry = self.cache.get(key)
            if entry is not None:
                out[i] = GenerationResult(req.request_id, GenerationStatus.OK, entry.text, entry.finish_reason,
                                          None, attempts=0, latency_s=0.0, cached=True)  # fmt: skip
                first_index[key] = i
            else:
                first_index[key] = i
                to_send.append(i)
        if to_send:
            sent = [requests[i] for i in to_send]
            fresh = await self.client.generate(sent)
            check_results(sent, fresh)
            for i, res in zip(to_send, fresh):
                out[i] = res
                if res.ok:
                    self.cache.put(keys[i], res, model_id=self.model_id, template_version=self.template_version)
        for i, (req, key) in enumerate(zip(requests, keys)):
            if out[i] is None:
                src = out[first_index[key]]
                assert src is not None
                if src.ok:
                    out[i] = dataclasses.replace(src, request_id=req.request_id, attempts=0, latency_s=0.0, cached=True)
                else:  # the shared attempt failed: each duplicate reports the same failure
                    out[i] = dataclasses.replace(src, request_id=req.request_id)
        return [r for r in out if r is not None]

    async def aclose(self) -> None:
        """Close the inner client."""
        await self.client.aclose()
