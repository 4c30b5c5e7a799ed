"""ResponseCache (sqlite, content-addressed) and CachedClient."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import pytest

from rlpt_plugin.teacher.cache import KEY_SCHEMA, CachedClient, CacheEntry, ResponseCache
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus, SamplingParams
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, always

PARAMS = SamplingParams(temperature=0.7, max_tokens=32, seed=1)
MSGS = (("system", "edit"), ("user", "fix this"))


def req(rid: str = "a", **kw: object) -> GenerationRequest:
    args: dict = {"request_id": rid, "params": PARAMS, "messages": MSGS, "assistant_prefix": "five words of the prefix"}
    args.update(kw)
    return GenerationRequest(**args)


def ok(rid: str, text: str, finish: str | None = "stop") -> GenerationResult:
    return GenerationResult(rid, GenerationStatus.OK, text, finish, None, attempts=1, latency_s=0.1)


def test_key_is_sha256_of_documented_canonical_json() -> None:
    # Recompute the key independently from the documented recipe.
    doc = {
        "schema": KEY_SCHEMA,
        "model_id": "m",
        "template_version": "t1",
        "params": {"temperature": 0.7, "top_p": 1.0, "max_tokens": 32, "seed": 1, "stop": [], "n": 1},
        "request": {"assistant_prefix": "five words of the prefix", "messages": [["system", "edit"], ["user", "fix this"]]},
    }
    expected = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert ResponseCache.key_for("m", "t1", req()) == expected


def test_key_ignores_request_id_and_changes_with_every_input() -> None:
    base = ResponseCache.key_for("m", "t1", req("a"))
    assert ResponseCache.key_for("m", "t1", req("other-id")) == base
    variants = [
        ResponseCache.key_for("m2", "t1", req()),
        ResponseCache.key_for("m", "t2", req()),
        ResponseCache.key_for("m", "t1", req(params=dataclasses.replace(PARAMS, seed=2))),
        ResponseCache.key_for("m", "t1", req(params=dataclasses.replace(PARAMS, temperature=0.0))),
        ResponseCache.key_for("m", "t1", req(params=dataclasses.replace(PARAMS, stop=("x",)))),
        ResponseCache.key_for("m", "t1", req(messages=(("system", "edit"), ("user", "fix this!")))),
        ResponseCache.key_for("m", "t1", req(messages=(("user", "edit"), ("user", "fix this")))),
        ResponseCache.key_for("m", "t1", req(assistant_prefix="five words of the suffix")),
        ResponseCache.key_for("m", "t1", req(messages=None, prompt="fix this")),
    ]
    assert len(set(variants + [base])) == len(variants) + 1


def test_put_get_counters_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cache.sqlite"
    with ResponseCache(path) as cache:
        key = cache.key_for("m", "t1", req())
        assert cache.get(key) is None
        cache.put(key, ok("a", "a better continuation", "length"), model_id="m", template_version="t1")
        assert cache.get(key) == CacheEntry("a better continuation", "length")
        assert cache.stats() == {"hits": 1, "misses": 1, "entries": 1}
    with ResponseCache(path) as reopened:  # survives closing and reopening (a restart)
        assert reopened.get(key) == CacheEntry("a better continuation", "length")
        assert reopened.stats() == {"hits": 1, "misses": 0, "entries": 1}
    mode = sqlite3.connect(str(path)).execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_empty_text_is_cached_but_failures_are_not(tmp_path: Path) -> None:
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        cache.put("k-empty", ok("a", "", None))
        assert cache.get("k-empty") == CacheEntry("", None)
        failed = GenerationResult.failure("a", "HTTP 503 (4 attempts)", 4, 1.0)
        with pytest.raises(ValueError, match="result.status must be 'ok' to be cached, got 'failed'"):
            cache.put("k-fail", failed)
        assert cache.get("k-fail") is None and len(cache) == 1


def test_directory_path_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="path must be a file path for the cache, got the directory"):
        ResponseCache(tmp_path)


def test_cached_client_avoids_second_call_across_restart(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite"
    reqs = [req("a", messages=(("user", "one"),)), req("b", messages=(("user", "two"),))]

    async def once() -> list[GenerationResult]:
        with ResponseCache(path) as cache:
            client = CachedClient(OpenAIClient([srv.base_url], "teacher", timeout_s=1.0, backoff_s=0.01), cache, "t1")
            try:
                return await client.generate(reqs)
            finally:
                await client.aclose()

    with LoopbackServer() as srv:
        first = asyncio.run(asyncio.wait_for(once(), 10))
        assert [r.text for r in first] == ["reply to: one", "reply to: two"]
        assert [(r.cached, r.attempts) for r in first] == [(False, 1), (False, 1)]
        assert srv.total == 2
        second = asyncio.run(asyncio.wait_for(once(), 10))  # new cache object, same file
        assert srv.total == 2  # no new HTTP request
        assert [r.text for r in second] == ["reply to: one", "reply to: two"]
        assert [(r.request_id, r.cached, r.attempts, r.finish_reason) for r in second] == [
            ("a", True, 0, "stop"), ("b", True, 0, "stop")]  # fmt: skip


class _Recorder:
    """In-process TeacherClient that records what reaches it and fails requests mentioning 'bad'."""

    model_id = "rec"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        self.seen.extend(r.request_id for r in requests)
        return [GenerationResult.failure(r.request_id, "HTTP 503 (4 attempts)", 4, 0.0) if "bad" in str(r.messages)
                else ok(r.request_id, f"ans {r.messages[-1][1]}") for r in requests]  # fmt: skip

    async def aclose(self) -> None:
        pass


def test_cached_client_failures_not_cached_and_duplicates_sent_once(tmp_path: Path) -> None:
    inner = _Recorder()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        client = CachedClient(inner, cache, "t1")
        reqs = [req("x", messages=(("user", "bad"),)), req("y", messages=(("user", "q"),)),
                req("z", messages=(("user", "q"),))]  # fmt: skip
        r1 = asyncio.run(client.generate(reqs))
        assert inner.seen == ["x", "y"]  # z duplicates y's content: not sent
        assert [(r.request_id, r.status.value, r.text, r.cached) for r in r1] == [
            ("x", "failed", None, False), ("y", "ok", "ans q", False), ("z", "ok", "ans q", True)]  # fmt: skip
        assert len(cache) == 1
        r2 = asyncio.run(client.generate(reqs))
        assert inner.seen == ["x", "y", "x"]  # the failure is retried, the answer is not
        assert [r.cached for r in r2] == [False, True, True]
        assert client.model_id == "rec"


def test_cached_client_keys_include_template_version(tmp_path: Path) -> None:
    inner = _Recorder()
    with ResponseCache(tmp_path / "c.sqlite") as cache:
        asyncio.run(CachedClient(inner, cache, "t1").generate([req("a")]))
        asyncio.run(CachedClient(inner, cache, "t2").generate([req("a")]))
        asyncio.run(CachedClient(inner, cache, "t1").generate([req("a")]))
        assert inner.seen == ["a", "a"]
    with pytest.raises(ValueError, match="template_version must be a non-empty string, got ''"):
        CachedClient(inner, ResponseCache(tmp_path / "d.sqlite"), "")


def test_failed_server_result_not_cached_end_to_end(tmp_path: Path) -> None:
    with LoopbackServer(plan=always(Fault(FaultKind.HTTP_503))) as srv, ResponseCache(tmp_path / "c.sqlite") as cache:
        client = CachedClient(OpenAIClient([srv.base_url], "t", timeout_s=1.0, backoff_s=0.01, max_attempts=2), cache, "v")
        [res] = asyncio.run(asyncio.wait_for(client.generate([req()]), 10))
        assert not res.ok and len(cache) == 0 and srv.total == 2
