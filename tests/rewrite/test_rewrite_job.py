"""``rlpt rewrite`` end to end against a real OpenAI-protocol server on loopback."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from rlpt_plugin.cli import main
from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
from tests.rewrite.fixtures import kill_after_parts, make_corpus, make_tokenizer_dir
from tests.teacher.loopback_server import REFUSAL_TEXT, Fault, FaultKind, LoopbackServer, always

N = 8


def teacher(body: dict) -> str:
    """Deterministic in the request: ~10% refusals, ~10% blank answers, else N+2 vocab words."""
    h = int(hashlib.sha256(json.dumps(body.get("messages"), sort_keys=True).encode()).hexdigest()[:8], 16)
    if h % 10 == 0:
        return REFUSAL_TEXT
    if h % 10 == 1:
        return "   "
    rng = random.Random(h)
    return " ".join(f"w{rng.randrange(200)}" for _ in range(N + 2))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rewrite")
    return {"tok": make_tokenizer_dir(root / "tok"), "corpus": make_corpus(root / "corpus.jsonl", 60)}


def args(data: dict[str, Path], server: LoopbackServer, out: Path, *extra: str) -> list[str]:
    return ["rewrite", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(out),
            "--endpoint", server.base_url, "--model", "loopback-teacher", "--suffix-length", str(N),
            "--seq-length", "32", "--min-prefix", "4", "--windows-per-doc", "2", "--chunk-size", "16",
            "--concurrency", "4", "--timeout", "5", "--no-progress", *extra]


def store_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_rewrite_counts_every_outcome_and_skip(data, tmp_path, capsys):
    with LoopbackServer(responder=teacher) as server:
        assert main(args(data, server, tmp_path / "store")) == 0
    out = capsys.readouterr().out
    store = RewrittenStore(tmp_path / "store", expect_suffix_length=N)
    counts = store.manifest["counts"]
    assert counts["refused"] > 0 and counts["empty"] > 0 and counts["rewritten"] > 0
    assert sum(counts.values()) == len(store) == 120  # 60 documents x 2 windows
    read = store.manifest["read"]
    # 6 groups of 4 malformed lines in the corpus (see fixtures.make_corpus)
    assert read["documents"] == 60
    assert (read["skipped_broken_json"], read["skipped_non_utf8"], read["skipped_empty"],
            read["skipped_missing_field"]) == (6, 6, 6, 6)
    assert "refused:" in out and "failed: 0" in out and "windows/s" in out
    for i in range(len(store)):
        w = store[i]
        assert len(w.original) == N and len(w.prefix) >= 4
        assert (w.rewrite is not None) == (w.status in ("rewritten", "copied"))
        if w.rewrite is not None:
            assert 0 < len(w.rewrite) <= N


def test_teacher_failures_are_recorded_never_silent(data, tmp_path):
    with LoopbackServer(responder=teacher, plan=always(Fault(FaultKind.HTTP_503))) as server:
        assert main(args(data, server, tmp_path / "store", "--attempts", "2")) == 0
    store = RewrittenStore(tmp_path / "store")
    assert store.manifest["counts"]["failed"] == len(store) == 120
    assert all(store[i].rewrite is None for i in range(len(store)))


def test_user_mistakes_are_clear_errors_not_tracebacks(data, tmp_path, capsys):
    with LoopbackServer(responder=teacher) as server:
        for bad, expected in (
                (["--corpus", str(tmp_path / "missing.jsonl")], "missing.jsonl"),
                (["--shard", "3/2"], "`--shard` must be i/n"),
                (["--tokenizer", str(tmp_path)], "tokenizer"),
        ):
            argv = args(data, server, tmp_path / "store", *bad)  # argparse: the last value wins
            assert main(argv) == 2
            err = capsys.readouterr().err
            assert err.startswith("rlpt rewrite: error:") and expected in err, err
            assert "Traceback" not in err


def test_shards_are_disjoint_and_cover_the_corpus(data, tmp_path):
    with LoopbackServer(responder=teacher) as server:
        main(args(data, server, tmp_path / "all"))
        for i in range(3):
            main(args(data, server, tmp_path / f"shard{i}", "--shard", f"{i}/3"))
    whole = RewrittenStore(tmp_path / "all")
    every = {(whole[i].doc_index, whole[i].window_index): whole[i] for i in range(len(whole))}
    seen: dict[tuple[int, int], int] = {}
    for i in range(3):
        shard = RewrittenStore(tmp_path / f"shard{i}")
        for j in range(len(shard)):
            w = shard[j]
            key = (w.doc_index, w.window_index)
            assert key not in seen, f"window {key} in shards {seen.get(key)} and {i}"
            seen[key] = i
            assert w.doc_index % 3 == i
            assert w.prefix.tolist() == every[key].prefix.tolist() and w.status == every[key].status
    assert set(seen) == set(every)


def test_kill_and_resume_gives_a_byte_identical_store(data, tmp_path):
    with LoopbackServer(responder=teacher) as server:
        assert main(args(data, server, tmp_path / "straight")) == 0
        requests_straight = server.total
        # Slow answers so the run is still going when it is killed.
        server.set_plan(always(Fault(FaultKind.SLOW, delay_s=0.05)))
        out = tmp_path / "killed"
        done_before_kill = kill_after_parts(args(data, server, out), out)
        assert 2 <= done_before_kill < 8 and not (out / "manifest.json").exists()
        server.set_plan(None)
        before_resume = server.total
        assert main(args(data, server, out)) == 0
        resumed_requests = server.total - before_resume
    assert store_files(out) == store_files(tmp_path / "straight")
    # Finished parts are not asked again, and the in-flight chunk comes from the cache.
    assert resumed_requests <= requests_straight - 16 * done_before_kill


def test_in_process_hugging_face_teacher_and_cache_reuse(tmp_path, capsys):
    from tests.rewrite.fixtures import make_tiny_teacher

    teacher_dir = make_tiny_teacher(tmp_path / "teacher")
    corpus = make_corpus(tmp_path / "c.jsonl", 6, bad_lines=False)
    argv = ["rewrite", "--corpus", str(corpus), "--tokenizer", str(teacher_dir), "--out",
            str(tmp_path / "store"), "--teacher", "hf", "--model", str(teacher_dir), "--suffix-length",
            str(N), "--seq-length", "32", "--min-prefix", "4", "--max-tokens", "12", "--no-progress"]
    assert main(argv) == 0
    first = store_files(tmp_path / "store")
    store = RewrittenStore(tmp_path / "store")
    assert len(store) == 6 and store.manifest["teacher"]["model_id"].startswith("teacher@")
    assert store.manifest["counts"]["failed"] == 0
    capsys.readouterr()
    assert main(argv) == 0  # a rerun pays nothing: every answer comes from the cache
    assert "teacher cache hits: 6" in capsys.readouterr().out
    assert store_files(tmp_path / "store") == first
