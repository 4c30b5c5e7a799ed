"""OpenAIClient credentials over real loopback HTTP: the key is sent, rejected keys give their
reason, and neither the key nor URL credentials ever appear in errors, ``repr`` or ``describe``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, SamplingParams
from rlpt_plugin.teacher.redact import redact_text, redact_url
from tests.teacher.loopback_server import LoopbackServer

KEY = "sk-loopback-0123456789abcdef"
WRONG = "sk-wrong-key-fedcba9876543210"
REQ = GenerationRequest("r1", SamplingParams(max_tokens=8), messages=(("user", "hello"),))


def ask(c: OpenAIClient, reqs: list[GenerationRequest] | None = None) -> list[GenerationResult]:
    async def go() -> list[GenerationResult]:
        try:
            return await c.generate(reqs or [REQ])
        finally:
            await c.aclose()

    return asyncio.run(asyncio.wait_for(go(), timeout=10.0))


def client(url: str, **kw: Any) -> OpenAIClient:
    opts: dict[str, Any] = dict(timeout_s=1.0, backoff_s=0.01, backoff_max_s=0.02, max_attempts=3)
    opts.update(kw)
    return OpenAIClient([url], "teacher-x", **opts)


def everything_said(c: OpenAIClient, results: list[GenerationResult]) -> str:
    return " ".join([repr(c), str(c.describe()), *(repr(r) for r in results)])


def test_right_key_is_sent_as_bearer_on_every_request() -> None:
    with LoopbackServer(api_key=KEY) as srv:
        c = client(srv.base_url, api_key=KEY)
        results = ask(c, [GenerationRequest(f"r{i}", REQ.params, messages=(("user", f"q{i}"),)) for i in range(3)])
        assert all(r.ok for r in results), [r.error for r in results]
        assert srv.auth_headers == [f"Bearer {KEY}"] * 3
        assert KEY not in everything_said(c, results)
        assert c.describe()["api_key"] == "<set>"


@pytest.mark.parametrize(("api_key", "reason"), [
    (None, "HTTP 401 (1 attempt): Missing API key"),
    (WRONG, "HTTP 401 (1 attempt): Incorrect API key provided: ***"),
])
def test_missing_or_wrong_key_fails_with_the_401_reason_and_no_key(api_key: str | None, reason: str) -> None:
    with LoopbackServer(api_key=KEY) as srv:
        c = client(srv.base_url, api_key=api_key)
        [res] = ask(c)
        # 401 is not retried: another attempt with the same key cannot succeed.
        assert not res.ok and res.attempts == 1 and res.error is not None
        assert res.error.startswith(reason), res.error
        said = everything_said(c, [res])
        # The server quoted the wrong key back; the client masked it.
        assert WRONG not in said and KEY not in said


def test_url_credentials_never_appear_in_errors_repr_or_describe() -> None:
    with LoopbackServer() as srv:
        dead = srv.base_url
    # userinfo and a key in the query string; the server is gone, so every attempt fails.
    url = dead.replace("http://", "http://alice:hunter2@") + "?api_key=QUERYSECRET&region=eu"
    c = client(url, api_key=KEY, max_attempts=2)
    [res] = ask(c)
    assert not res.ok and res.error is not None and res.error.startswith("connection error (2 attempts)")
    said = everything_said(c, [res])
    for secret in ("hunter2", "alice", "QUERYSECRET", KEY):
        assert secret not in said, (secret, said)
    assert "region=eu" in c.describe()["endpoints"][0]  # the rest of the URL still says where


def test_key_in_the_endpoint_query_string_is_sent_after_the_path() -> None:
    with LoopbackServer() as srv:
        [res] = ask(client(srv.base_url + "?key=QK"))
        assert res.ok, res.error


def test_bad_api_key_values_are_errors_that_do_not_quote_the_value() -> None:
    for bad, what in (("", "an empty string"), ("sk-abc def", "whitespace"), ("sk-abc\n", "whitespace"),
                      (123, "a int")):
        with pytest.raises(ValueError, match="api_key must be None or a non-empty string") as info:
            OpenAIClient(["http://127.0.0.1:1/v1"], "m", api_key=bad)  # type: ignore[arg-type]
        assert what in str(info.value)
        if isinstance(bad, str) and bad:
            assert bad.strip() not in str(info.value)
    with pytest.raises(ValueError, match=r"endpoints\[0\] must be an http\(s\):// base URL") as info:
        OpenAIClient(["ftp://bob:secretpw@host/v1"], "m")
    assert "secretpw" not in str(info.value)


@pytest.mark.parametrize(("url", "expected"), [
    ("https://bob:pw@api.example.com/v1?api_key=s3&x=1", "https://***@api.example.com/v1?api_key=***&x=1"),
    ("http://TOKEN@h:8000/v1", "http://***@h:8000/v1"),
    ("http://h/v1?token=a&access_token=b&key=c&Api-Key=d&sig=e&n=2", "http://h/v1?token=***&access_token=***&key=***&Api-Key=***&sig=***&n=2"),
    ("http://h/cb#access_token=zz&state=1", "http://h/cb#access_token=***&state=1"),
    ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8000/v1"),
    ("http://u:p@[::1/v1?key=x", "http://***@[::1/v1?key=***"),  # malformed: no crash, still masked
])
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


def test_redact_text_masks_urls_and_literal_secrets() -> None:
    text = "ConnectError: refused (http://u:pw@h:1/v1/chat?token=T1) with sk-12 and sk-123"
    out = redact_text(text, ["sk-12", "sk-123", None, ""])
    assert out == "ConnectError: refused (http://***@h:1/v1/chat?token=***) with *** and ***"
