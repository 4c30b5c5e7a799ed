"""``rlpt rewrite --task think`` against llama.cpp's OpenAI-protocol server (see conftest.py).

A random-weight model cannot copy a chunk, let alone insert thoughts into it: every chunk must
be dropped with a counted reason, and the job must still finish with an (empty) store and a
summary, on both routes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlpt_plugin.cli import main
from rlpt_plugin.megatron.data.think_store import ThinkStore
from rlpt_plugin.teacher.think_rewriter import THINK_STATUSES
from tests.rewrite.fixtures import make_corpus, make_tokenizer_dir
from tests.rewrite.think_cases import THINK_WORDS
from tests.servers.conftest import MODEL_ALIAS, SERVERS

pytestmark = SERVERS

DOCS = 4


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("servers_think")
    return {"tok": make_tokenizer_dir(root / "tok", THINK_WORDS),
            "corpus": make_corpus(root / "corpus.jsonl", DOCS, bad_lines=False)}


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_think_rewrite_of_a_random_model_drops_every_chunk_with_a_reason(llama_server, data, tmp_path, capsys, kind):
    out = tmp_path / "store"
    argv = ["rewrite", "--task", "think", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]),
            "--out", str(out), "--endpoint", llama_server, "--model", MODEL_ALIAS, "--endpoint-kind", kind,
            "--chunk-length", "16", "--min-chunk", "4", "--chunk-size", "4", "--concurrency", "2",
            "--timeout", "300", "--attempts", "2", "--temperature", "0.8", "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    store = ThinkStore(out)
    outcomes = store.manifest["outcomes"]
    assert set(outcomes) == set(THINK_STATUSES)
    chunks = store.manifest["chunking"]["windows"]
    assert chunks >= DOCS and sum(outcomes.values()) == chunks, outcomes
    assert outcomes["failed"] == 0, store.manifest["failures"]  # the server answered every request
    assert len(store) == outcomes["augmented"] == 0, outcomes  # gibberish never strips to the chunk
    summary = json.loads((tmp_path / "store.summary.json").read_text())
    assert summary["task"] == "think" and summary["statuses"] == outcomes
    assert sum(f["count"] for f in summary["failures"]) == chunks
    assert all(f["reason"].split(":")[0] in THINK_STATUSES for f in summary["failures"]), summary["failures"]
    assert store.manifest["teacher"]["endpoint_kind"] == kind
    assert "augmented (kept): 0" in printed
    print(f"\n[servers] think ({kind}): " + ", ".join(f"{k}={v}" for k, v in outcomes.items() if v))
