"""The project's real client against a server it did not write: llama.cpp's OpenAI-protocol
server (llama-cpp-python[server]) with a tiny random-weight model (see conftest.py).

What a random model shows: the wire format, both routes, chat-template handling of a primed
assistant turn, timeouts and concurrency against a server that answers one request at a time,
and that constrained decoding turns gibberish into verdicts that parse by construction.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from rlpt_plugin.cli import main
from rlpt_plugin.judge import Judge, JudgeConfig, JudgePool
from rlpt_plugin.judge.axes import Axis
from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams
from tests.rewrite.fixtures import make_corpus, make_tokenizer_dir
from tests.servers.conftest import MODEL_ALIAS, SERVERS

pytestmark = SERVERS

N = 8
DOCS = 6

POOLS = [
    JudgePool("The river town was founded in 1820 by", "settlers from the north who built a mill.",
              ("settlers from the north who built a mill.", "a king of the moon in 3020.", "people."),
              ("original", "rollout", "rollout")),
    JudgePool("Photosynthesis converts light into", "chemical energy stored in sugars.",
              ("chemical energy stored in sugars.", "sound waves and music."), ("original", "rollout")),
    JudgePool("The recipe needs two eggs and", "a cup of flour, mixed well.",
              ("a cup of flour, mixed well.", "a cup of flour, stirred slowly."), ("original", "rollout")),
]
AXES = ("quality", "safety", "factuality")


def run(coro: Any, limit_s: float = 600.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=limit_s))


def client(url: str, kind: str = "chat") -> OpenAIClient:
    # One request at a time is all llama-cpp-python's server does: a queue, hence the long timeout.
    return OpenAIClient([url], MODEL_ALIAS, endpoint_kind=kind, max_concurrency=2, timeout_s=300.0,  # type: ignore[arg-type]
                        max_attempts=2, backoff_s=0.1)


def judge_metrics(url: str, kind: str, mode: str, pools: list[JudgePool] = POOLS, axes: tuple[str, ...] = AXES,
                  max_tokens: int = 1024) -> tuple[list[Any], dict[str, float], Judge]:
    # One attempt per judgment: every failure shows in the counts, none is retried away.
    cfg = JudgeConfig(axes=axes, weights={a: 1.0 for a in axes}, structured_output=mode, max_attempts=1,
                      params=SamplingParams(temperature=0.0, max_tokens=max_tokens), retry_temperature=None)
    judge = Judge(client(url, kind), cfg)

    async def go() -> list[Any]:
        try:
            return await judge.judge(pools)
        finally:
            await judge.aclose()

    verdicts = run(go())
    return verdicts, judge.metrics(), judge


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("servers_rewrite")
    return {"tok": make_tokenizer_dir(root / "tok"), "corpus": make_corpus(root / "corpus.jsonl", DOCS, bad_lines=False)}


def test_the_server_answers_the_client_on_both_routes(llama_server):
    for kind, req in (("chat", GenerationRequest("c", SamplingParams(max_tokens=12, seed=1),
                                                 messages=(("system", "Be brief."), ("user", "Say hi."))),),
                      ("completions", GenerationRequest("p", SamplingParams(max_tokens=12, seed=1), prompt="Once upon"))):
        c = client(llama_server, kind)
        (res,) = run(c.generate([req]))
        run(c.aclose())
        assert res.ok, res.error
        assert isinstance(res.text, str) and res.finish_reason in ("stop", "length")
        assert res.attempts == 1 and res.reasoning is None


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_rlpt_rewrite_end_to_end_into_a_store(llama_server, data, tmp_path, capsys, kind):
    out = tmp_path / "store"
    argv = ["rewrite", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(out),
            "--endpoint", llama_server, "--model", MODEL_ALIAS, "--endpoint-kind", kind,
            "--suffix-length", str(N), "--seq-length", "32", "--min-prefix", "4", "--chunk-size", "3",
            "--concurrency", "2", "--timeout", "300", "--attempts", "2", "--temperature", "0.8",
            "--no-progress"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    store = RewrittenStore(out)
    counts = store.manifest["counts"]
    assert counts["failed"] == 0, counts
    assert sum(counts.get(k, 0) for k in ("rewritten", "copied", "empty", "refused")) == DOCS, counts
    assert len(store) == DOCS and store.manifest["teacher"]["endpoint_kind"] == kind
    # A random model writes gibberish, which the word-level fixture tokenizer still encodes.
    assert counts.get("rewritten", 0) > 0, counts
    summary = json.loads((tmp_path / "store.summary.json").read_text())
    assert summary["failures"] == [] or all(f["count"] == 0 for f in summary["failures"]), summary["failures"]
    assert (out.parent / "store.cache.sqlite").exists()


@pytest.mark.parametrize(("kind", "mode"), [("chat", "json_object"), ("completions", "grammar"),
                                            ("chat", "auto"), ("completions", "auto")])
def test_structured_verdicts_of_a_random_model_all_parse(llama_server, kind, mode):
    verdicts, m, judge = judge_metrics(llama_server, kind, mode)
    assert m["calls"] > 0 and m["http_failures"] == 0, m
    assert m["parse_failures"] == 0, [v.errors for v in verdicts]
    assert m["failed_pools"] == 0 and all(not v.failed for v in verdicts)
    for v, pool in zip(verdicts, POOLS):
        assert v.scores is not None and len(v.scores) == len(pool.candidates)
        assert set(v.per_axis) == {Axis(a) for a in AXES}
    if mode == "auto":
        # llama-cpp-python 0.3.36 refuses OpenAI's json_schema type on chat (HTTP 500 quoting its
        # validation error on response_format) and ignores it on completions (free text): auto
        # moves on once, to json_object on chat and grammar on completions.
        assert m["structured_output_downgrades"] == 1, m
        assert judge.structured_kind == ("json_object" if kind == "chat" else "grammar")
    print(f"\n[servers] structured_output={mode} ({kind}): calls={m['calls']:g} "
          f"parse_failures={m['parse_failures']:g}")


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_without_structured_output_the_same_model_mostly_fails_to_parse(llama_server, kind):
    # 256 new tokens are plenty to show it (greedy gibberish runs to the budget: keep it short).
    verdicts, m, _ = judge_metrics(llama_server, kind, "off", max_tokens=256)
    assert m["http_failures"] == 0, m
    # Every failed attempt of an answered request is a parse failure; most answers are gibberish.
    assert m["parse_failures"] >= 0.8 * m["calls"], m
    assert m["failed_pools"] >= 2, m
    print(f"\n[servers] structured_output=off ({kind}): calls={m['calls']:g} "
          f"parse_failures={m['parse_failures']:g}")


def test_json_schema_is_refused_by_this_server_and_said_so(llama_server):
    # An explicit json_schema judge against a server that does not know the type fails loudly
    # (llama-cpp-python answers HTTP 500 with its validation error), it never scores anything.
    verdicts, m, _ = judge_metrics(llama_server, "chat", "json_schema", pools=POOLS[:1], axes=("quality",))
    assert verdicts[0].failed and m["http_failures"] == m["calls"] > 0, m
    assert "HTTP 500" in verdicts[0].errors[0] and "response_format" in verdicts[0].errors[0]


def test_the_tiny_model_is_deterministic_and_its_vocabulary_covers_every_prompt(tmp_path):
    from rlpt_plugin.teacher.templates import load_template
    from tests.servers.tiny_gguf import build, vocabulary

    a, b = build(tmp_path / "a"), build(tmp_path / "b")
    assert a.name == b.name and a.read_bytes() == b.read_bytes()
    assert build(tmp_path / "a") == a  # cached: not rebuilt
    tokens, scores, types = vocabulary()
    assert len(tokens) == len(scores) == len(types) == 3 + 256 + 95
    assert len(set(tokens)) == len(tokens)
    # The prompts' characters: printable ASCII (one token each), space (the word boundary) and
    # newline (a byte token); nothing needs an unknown token.
    chars = set()
    for name in ("judge_quality_v1", "judge_safety_v1", "judge_factuality_v1", "rewrite_v1", "think_v1"):
        chars |= set("".join(text for _, text in load_template(name).sections))
    assert chars and all(c in tokens or c == "\n" or (c == " " and "\u2581" in tokens) for c in chars), \
        sorted(c for c in chars if c not in tokens)
