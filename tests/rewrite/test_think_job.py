"""``rlpt rewrite --task think`` end to end against the loopback OpenAI-protocol server, whose
crafted answers cover every outcome (tests/rewrite/think_cases.py)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rlpt_plugin.cli import main
from rlpt_plugin.data.corpus import open_corpus
from rlpt_plugin.megatron.data.think_store import ThinkStore, ThinkStoreError
from tests.rewrite.fixtures import kill_after_parts, make_corpus, make_tokenizer_dir
from tests.rewrite.think_cases import THINK_WORDS, expected_status, responder
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, always

L = 12  # tokens per chunk


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("think")
    return {"tok": make_tokenizer_dir(root / "tok", THINK_WORDS), "corpus": make_corpus(root / "corpus.jsonl", 40)}


def args(data: dict[str, Path], server: LoopbackServer, out: Path, *extra: str) -> list[str]:
    return ["rewrite", "--task", "think", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]),
            "--out", str(out), "--endpoint", server.base_url, "--model", "loopback-teacher",
            "--chunk-length", str(L), "--min-chunk", "4", "--chunk-size", "16", "--concurrency", "4",
            "--timeout", "5", "--no-progress", *extra]


def corpus_chunks(data: dict[str, Path]) -> dict[tuple[int, int], list[int]]:
    from rlpt_plugin.data.tokenizer import load_tokenizer

    tok = load_tokenizer(str(data["tok"]))
    out = {}
    for doc in open_corpus([str(data["corpus"])]):
        ids = tok.encode(doc.text)
        for k, start in enumerate(range(0, len(ids), L)):
            if len(ids[start:start + L]) >= 4:
                out[(doc.index, k)] = ids[start:start + L]
    return out


def store_files(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def test_think_rewrite_keeps_the_good_chunks_and_counts_every_bad_one(data, tmp_path, capsys):
    from rlpt_plugin.data.tokenizer import load_tokenizer

    with LoopbackServer(responder=responder) as server:
        assert main(args(data, server, tmp_path / "store")) == 0
    printed = capsys.readouterr().out
    tok = load_tokenizer(str(data["tok"]))
    chunks = corpus_chunks(data)
    expected = Counter(expected_status(tok.decode(ids)) for ids in chunks.values())
    assert len(expected) == 6, expected  # every crafted outcome occurs
    store = ThinkStore(tmp_path / "store", expect_tokenizer=tok.fingerprint)
    m = store.manifest
    assert m["task"] == "think" and m["format"] == "rlpt-think-store-v1"
    assert {k: v for k, v in m["outcomes"].items() if v} == dict(expected)
    assert len(store) == expected["augmented"] == m["thoughts"]["kept_chunks"]
    reasons = {f["reason"].split(":")[0]: f["count"] for f in m["failures"]}
    assert reasons == {k: v for k, v in expected.items() if k != "augmented"}
    thought_tokens = 0
    for i in range(len(store)):
        c = store[i]
        original = chunks[(c.doc_index, c.chunk_index)]
        assert c.original.tolist() == original  # the chunk's own ids, never re-encoded
        assert c.tokens[c.mask == 0].tolist() == original
        assert c.mask.sum() > 0 and c.tokens[c.mask == 1][0] == tok.encode("<think>")[0]
        text = tok.decode(c.tokens.tolist())
        assert "<thinking>" not in text and "<thought>" not in text and text.count("<think>") == text.count("</think>")
        thought_tokens += int(c.mask.sum())
    assert thought_tokens == m["num_thought_tokens"] == m["thoughts"]["thought_tokens"]
    summary = json.loads((tmp_path / "store.summary.json").read_text())
    assert summary["task"] == "think" and summary["statuses"] == m["outcomes"]
    assert f"augmented (kept): {expected['augmented']}" in printed and "thoughts_changed_text" in printed


def test_a_store_whose_thoughts_do_not_strip_to_the_original_is_refused(data, tmp_path):
    from rlpt_plugin.megatron.data.think_store import write_think_store

    manifest = {"tokenizer": {"name": "t", "fingerprint": "f", "vocab_size": 9}}
    with pytest.raises(ThinkStoreError, match="chunk 0:0: removing the thought tokens"):
        write_think_store(tmp_path / "bad", [(0, 0, [1, 2, 3], [1, 7, 3], [0, 1, 0])], manifest)
    write_think_store(tmp_path / "ok", [(0, 0, [1, 2, 3], [1, 7, 2, 3], [0, 1, 0, 0])], manifest)
    store = ThinkStore(tmp_path / "ok")
    assert store[0].tokens.tolist() == [1, 7, 2, 3] and store[0].num_thought_tokens == 1
    mask = tmp_path / "ok" / "mask.bin"  # a corrupted copy: the thought mark moved
    mask.write_bytes(bytes([0, 0, 1, 0]))
    with pytest.raises(ThinkStoreError, match="does not give back the original"):
        ThinkStore(tmp_path / "ok")[0]


def test_teacher_failures_are_counted_with_their_reason(data, tmp_path):
    with LoopbackServer(responder=responder, plan=always(Fault(FaultKind.HTTP_503))) as server:
        assert main(args(data, server, tmp_path / "store", "--attempts", "1")) == 0
    store = ThinkStore(tmp_path / "store")
    assert len(store) == 0 and store.manifest["outcomes"]["failed"] == sum(store.manifest["outcomes"].values()) > 0
    assert store.manifest["failures"][0]["reason"].startswith("HTTP 503")


def test_options_of_the_other_task_and_bad_settings_are_clear_errors(data, tmp_path, capsys):
    with LoopbackServer(responder=responder) as server:
        for bad, expected in (
                (["--suffix-length", "8"], "--suffix-length is not an option of --task think"),
                (["--seed", "1", "--windows-per-doc", "2"], "--windows-per-doc, --seed are not"),
                (["--template", "rewrite_v1"], "placeholder {chunk}"),
                (["--chunk-length", "0"], "`--chunk-length` must be an integer >= 1"),
                (["--min-chunk", "20"], "`--min-chunk` (20) must be <= `--chunk-length` (12)"),
                (["--chunk-length", "4096"], "must be <= `--seq-length`"),
                (["--teacher", "world", "--world-rewrite-miss", "0.2"],
                 "--world-rewrite-miss: not an option of --task think with --teacher world"),
        ):
            assert main(args(data, server, tmp_path / "store", *bad)) == 2
            err = capsys.readouterr().err
            assert err.startswith("rlpt rewrite: error:") and expected in err, err
        suffix = [a for a in args(data, server, tmp_path / "s") if a not in ("--task", "think")]
        assert main(suffix) == 2
        assert "--chunk-length, --min-chunk are not an option" in capsys.readouterr().err


def test_kill_and_resume_gives_a_byte_identical_think_store(data, tmp_path):
    with LoopbackServer(responder=responder) as server:
        assert main(args(data, server, tmp_path / "straight")) == 0
        requests_straight = server.total
        server.set_plan(always(Fault(FaultKind.SLOW, delay_s=0.05)))
        out = tmp_path / "killed"
        done_before_kill = kill_after_parts(args(data, server, out), out)
        num_parts = -(-requests_straight // 16)
        assert 2 <= done_before_kill < num_parts and not (out / "manifest.json").exists()
        server.set_plan(None)
        before_resume = server.total
        assert main(args(data, server, out)) == 0
        resumed_requests = server.total - before_resume
    assert store_files(out) == store_files(tmp_path / "straight")
    assert resumed_requests <= requests_straight - 16 * done_before_kill
    straight = json.loads((tmp_path / "straight.summary.json").read_text())
    resumed = json.loads((tmp_path / "killed.summary.json").read_text())
    assert resumed["resumed_windows"] == 16 * done_before_kill
    assert resumed["statuses"] == straight["statuses"] and resumed["failures"] == straight["failures"]
    assert np.array_equal(ThinkStore(out)[0].tokens, ThinkStore(tmp_path / "straight")[0].tokens)


def test_parts_of_another_job_are_not_mixed_in(data, tmp_path, capsys):
    out = tmp_path / "store"
    parts = out.with_name(out.name + ".parts")
    with LoopbackServer(responder=responder, api_key="secret") as server:  # we send no key: 401
        assert main(args(data, server, out)) == 2  # rejected credentials: stops, parts folder left
    assert (parts / "job.json").exists()
    with LoopbackServer(responder=responder) as server:
        assert main(args(data, server, out, "--chunk-length", "10")) == 2
        assert "differs in spec" in capsys.readouterr().err
        assert main(args(data, server, out)) == 0  # the same job resumes and finishes
    assert not parts.exists() and len(ThinkStore(out)) > 0
