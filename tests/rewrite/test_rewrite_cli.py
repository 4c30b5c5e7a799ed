"""``rlpt rewrite`` options against a real loopback server: API keys (never shown or saved),
both endpoint kinds, max new tokens derived from N, failure reasons in every summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlpt_plugin.cli import main
from rlpt_plugin.data.tokenizer import load_tokenizer
from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
from rlpt_plugin.teacher.rewriter import default_max_tokens
from tests.rewrite.fixtures import make_corpus, make_tokenizer_dir
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer

N = 8
KEY = "sk-rewrite-KEY-0123456789"
WRONG = "sk-rewrite-WRONG-9876543210"
ENV = "RLPT_TEST_TEACHER_KEY"


def words(body: dict) -> str:
    """A deterministic answer of N + 2 fixture words for either request kind."""
    seed = len(json.dumps(body.get("messages") or body.get("prompt")))
    return " ".join(f"w{(seed * 7 + i * 13) % 200}" for i in range(N + 2))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("rewrite_cli")
    return {"tok": make_tokenizer_dir(root / "tok"), "corpus": make_corpus(root / "corpus.jsonl", 12, bad_lines=False)}


def argv(data: dict[str, Path], url: str, out: Path, *extra: str) -> list[str]:
    return ["rewrite", "--corpus", str(data["corpus"]), "--tokenizer", str(data["tok"]), "--out", str(out),
            "--endpoint", url, "--model", "loopback-teacher", "--suffix-length", str(N), "--seq-length", "32",
            "--min-prefix", "4", "--chunk-size", "4", "--concurrency", "4", "--timeout", "5", "--attempts", "2",
            "--no-progress", *extra]


def files_containing(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_api_key_from_env_is_sent_and_never_written_or_printed(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(ENV, KEY)
    out = tmp_path / "store"
    with LoopbackServer(responder=words, api_key=KEY) as srv:
        assert main(argv(data, srv.base_url + "?token=QUERYSECRET", out, "--api-key-env", ENV)) == 0
        assert set(srv.auth_headers) == {f"Bearer {KEY}"} and srv.total == 12
    said = capsys.readouterr()
    store = RewrittenStore(out)
    assert store.manifest["counts"]["failed"] == 0
    assert store.manifest["teacher"]["endpoints"] == [srv.base_url + "?token=***"]
    summary = json.loads((tmp_path / "store.summary.json").read_text())
    assert summary["teacher"]["endpoints"] == [srv.base_url + "?token=***"]
    for secret in (KEY, "QUERYSECRET"):
        assert files_containing(tmp_path, secret) == []
        assert secret not in said.out + said.err


@pytest.mark.parametrize(("key", "reason"), [
    (None, "HTTP 401 (1 attempt): Missing API key"),
    (WRONG, "HTTP 401 (1 attempt): Incorrect API key provided: ***"),
])
def test_a_rejected_key_stops_the_job_with_the_401_reason(data, tmp_path, monkeypatch, capsys, key, reason):
    extra: tuple[str, ...] = ()
    if key is not None:
        monkeypatch.setenv(ENV, key)
        extra = ("--api-key-env", ENV)
    with LoopbackServer(responder=words, api_key=KEY) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "store", *extra)) == 2
        assert len(srv.auth_headers) == 4  # the first chunk only: no later request could succeed
    err = capsys.readouterr().err
    assert err.startswith("rlpt rewrite: error: the teacher rejected the credentials") and reason in err, err
    assert "Traceback" not in err and WRONG not in err
    assert not (tmp_path / "store").exists() and files_containing(tmp_path, WRONG) == []


@pytest.mark.parametrize(("value", "problem"), [(None, "which is not set"), ("  ", "which is empty")])
def test_api_key_env_unset_or_empty_is_a_clear_error(data, tmp_path, monkeypatch, capsys, value, problem):
    monkeypatch.delenv(ENV, raising=False)
    if value is not None:
        monkeypatch.setenv(ENV, value)
    with LoopbackServer(responder=words) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "store", "--api-key-env", ENV)) == 2
        assert srv.total == 0
    err = capsys.readouterr().err
    assert f"`--api-key-env` names the environment variable {ENV}, {problem}" in err, err


@pytest.mark.parametrize("kind", ["chat", "completions"])
def test_both_endpoint_kinds_rewrite(data, tmp_path, capsys, kind):
    with LoopbackServer(responder=words) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "store", "--endpoint-kind", kind)) == 0
        bodies = list(srv.bodies)
        assert srv.counts == {f"/v1/{'chat/completions' if kind == 'chat' else 'completions'}": 12}
    store = RewrittenStore(tmp_path / "store")
    assert store.manifest["counts"]["failed"] == 0 and store.manifest["counts"]["rewritten"] > 0
    assert store.manifest["teacher"]["endpoint_kind"] == kind
    tok = load_tokenizer(str(data["tok"]))
    # The priming words: the last five of each window's prefix (all of it when shorter).
    primes = {" ".join(tok.decode(store[i].prefix.tolist()).split()[-5:]) for i in range(len(store))}
    for body in bodies:
        if kind == "chat":
            assert body["messages"][-1]["role"] == "assistant" and "prompt" not in body
            continue
        # One prompt: the instructions, then the last five words of the prefix to continue from.
        prompt = body["prompt"]
        assert "messages" not in body and prompt.startswith("You are an expert editor")
        assert "Beginning of the document:" in prompt
        assert any(prompt.endswith("\n\n" + p) for p in primes), prompt[-80:]


def test_max_new_tokens_default_derives_from_n_and_the_option_overrides(data, tmp_path, capsys):
    assert default_max_tokens(128) == 144 and default_max_tokens(8) == 16 and default_max_tokens(1024) == 1152
    with LoopbackServer(responder=words) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "a")) == 0
        assert {b["max_tokens"] for b in srv.bodies} == {default_max_tokens(N)}
    with LoopbackServer(responder=words) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "b", "--max-tokens", str(N))) == 0
        assert {b["max_tokens"] for b in srv.bodies} == {N}
    assert RewrittenStore(tmp_path / "a").manifest["teacher"]["sampling"]["max_tokens"] == 16
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["rewrite", "--help"])
    assert "N + max(8, ceil(N/8))" in " ".join(capsys.readouterr().out.split())


def test_failure_reasons_reach_the_console_the_summary_and_the_manifest(data, tmp_path, capsys):
    def too_long(body: dict, seen: int) -> Fault:
        asked = 500 + len(json.dumps(body)) % 200  # request-specific, like a real server's count
        return Fault(FaultKind.HTTP_400, message=f"This model's maximum context length is 512 tokens. "
                                                 f"However, you requested {asked} tokens.")

    with LoopbackServer(responder=words, plan=too_long) as srv:
        assert main(argv(data, srv.base_url, tmp_path / "store")) == 0
    out = capsys.readouterr().out
    reason = "HTTP 400: This model's maximum context length is <n> tokens. However, you requested <n> tokens."
    assert "failed: 12" in out and "failure reasons (1 distinct):" in out
    assert f"  12 x {reason}" in out
    assert "e.g. HTTP 400 (1 attempt): This model's maximum context length is 512 tokens. However, you requested" in out
    [group] = json.loads((tmp_path / "store.summary.json").read_text())["failures"]
    assert group["reason"] == reason and group["count"] == 12 and "512 tokens" in group["example"]
    assert RewrittenStore(tmp_path / "store").manifest["failures"] == [group]
