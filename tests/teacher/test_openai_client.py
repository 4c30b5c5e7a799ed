"""OpenAIClient against a real loopback HTTP server: success, every fault class, retries, pool,
concurrency bound, ordering."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest

from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus, SamplingParams
from tests.teacher.loopback_server import REFUSAL_TEXT, Fault, FaultKind, LoopbackServer, always, fail_first

T = TypeVar("T")
PARAMS = SamplingParams(max_tokens=16, seed=3, stop=("\n\n",))
CHAT = "/v1/chat/completions"
COMPL = "/v1/completions"


def run(coro: Coroutine[Any, Any, T], limit_s: float = 10.0) -> T:
    """Run ``coro`` with a hard time bound so a bug cannot hang the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout=limit_s))


def chat(i: int | str, content: str | None = None) -> GenerationRequest:
    return GenerationRequest(request_id=f"r{i}", params=PARAMS, messages=(("system", "be brief"), ("user", content or f"q{i}")))


# A request that should succeed gets a timeout no loaded machine reaches; only the hang cases use
# a short one, and their server hangs until it is stopped, so a timeout there cannot be a race.
RELAXED_S = 10.0
HANG_TIMEOUT_S = 0.5
HANG = Fault(FaultKind.HANG, delay_s=60.0)  # woken early when the server stops


def client(*servers: LoopbackServer, **kw: Any) -> OpenAIClient:
    opts: dict[str, Any] = dict(timeout_s=RELAXED_S, backoff_s=0.01, backoff_max_s=0.05, max_attempts=4)
    opts.update(kw)
    return OpenAIClient([s.base_url for s in servers], "teacher-x", **opts)


async def gen(c: OpenAIClient, reqs: list[GenerationRequest]) -> list[GenerationResult]:
    try:
        return await c.generate(reqs)
    finally:
        await c.aclose()


def test_chat_success_and_wire_format() -> None:
    with LoopbackServer() as srv:
        c = client(srv, api_key="k")
        [res] = run(gen(c, [chat(1, "hello there")]))
        assert (res.status, res.text, res.finish_reason, res.error, res.attempts) == (
            GenerationStatus.OK, "reply to: hello there", "stop", None, 1)  # fmt: skip
        assert srv.counts == {CHAT: 1}
        body = srv.bodies[0]
        assert body["model"] == "teacher-x"
        assert body["messages"] == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
        assert (body["temperature"], body["top_p"], body["max_tokens"], body["seed"], body["stop"]) == (0.0, 1.0, 16, 3, ["\n\n"])
        assert "continue_final_message" not in body  # only sent when an assistant prefix primes the answer
        assert c.stats()["requests"] == 1 and c.stats()["retries"] == 0


def test_chat_assistant_prefix_is_a_continued_final_message() -> None:
    req = GenerationRequest("p", PARAMS, messages=(("user", "go"),), assistant_prefix="the last five words are")
    with LoopbackServer(responder=lambda body: " next") as srv:
        [res] = run(gen(client(srv), [req]))
        assert res.text == " next"  # the continuation only, nothing prepended
        body = srv.bodies[0]
        assert body["messages"][-1] == {"role": "assistant", "content": "the last five words are"}
        assert body["continue_final_message"] is True and body["add_generation_prompt"] is False


def test_completions_success_appends_prefix_to_prompt() -> None:
    req = GenerationRequest("c", SamplingParams(), prompt="Once upon", assistant_prefix=" a time")
    with LoopbackServer() as srv:
        [res] = run(gen(client(srv, endpoint_kind="completions"), [req]))
        assert res.ok and res.text == "continuation of: Once upon a time"
        assert srv.counts == {COMPL: 1}
        assert "seed" not in srv.bodies[0] and "stop" not in srv.bodies[0]


def test_request_kind_must_match_endpoint_kind() -> None:
    req = GenerationRequest("c", PARAMS, prompt="x")
    with pytest.raises(ValueError, match=r"requests\[0\] \('c'\) is a completions request but endpoint_kind is 'chat'"):
        run(gen(OpenAIClient(["http://127.0.0.1:9/v1"], "m"), [req]))


TRANSIENT = [
    Fault(FaultKind.HTTP_500),
    Fault(FaultKind.HTTP_503),
    Fault(FaultKind.HTTP_429),
    HANG,
    Fault(FaultKind.TRUNCATED_JSON),
    Fault(FaultKind.NO_CHOICES),
    Fault(FaultKind.RESET),
]


@pytest.mark.parametrize("fault", TRANSIENT, ids=lambda f: f.kind.value)
def test_transient_fault_is_retried_then_succeeds(fault: Fault) -> None:
    with LoopbackServer(plan=fail_first(2, fault)) as srv:
        # the third attempt must answer within the hang case's short timeout: 1 s there
        c = client(srv, timeout_s=1.0) if fault is HANG else client(srv)
        [res] = run(gen(c, [chat(1)]), limit_s=30.0)
        assert res.ok and res.text == "reply to: q1"
        assert res.attempts == 3 and srv.counts[CHAT] == 3
        assert c.stats()["retries"] == 2 and c.stats()["failures"] == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(FaultKind.HTTP_503), r"^HTTP 503 \(3 attempts\): injected 503$"),
        (Fault(FaultKind.HTTP_429), r"^HTTP 429 \(3 attempts\): injected 429$"),
        (HANG, r"^timeout after 0\.5s \(3 attempts\)"),
        (Fault(FaultKind.TRUNCATED_JSON), r"^malformed JSON response \(3 attempts\)"),
        (Fault(FaultKind.NO_CHOICES), r"^response without choices\[0\] \(3 attempts\)"),
        (Fault(FaultKind.RESET), r"^connection error \(3 attempts\)"),
    ],
    ids=lambda v: v.kind.value if isinstance(v, Fault) else "",
)
def test_persistent_fault_fails_with_explicit_record(fault: Fault, error: str) -> None:
    with LoopbackServer(plan=always(fault)) as srv:
        c = client(srv, max_attempts=3, timeout_s=HANG_TIMEOUT_S if fault is HANG else RELAXED_S)
        [res] = run(gen(c, [chat(1)]), limit_s=30.0)
        assert res.status is GenerationStatus.FAILED and res.text is None
        assert res.error is not None
        assert re.match(error, res.error), res.error
        assert res.attempts == 3 and srv.counts[CHAT] == 3
        assert c.stats()["failures"] == 1


def test_client_error_is_not_retried() -> None:
    with LoopbackServer(plan=always(Fault(FaultKind.HTTP_400))) as srv:
        [res] = run(gen(client(srv), [chat(1)]))
        assert not res.ok and res.error == "HTTP 400 (1 attempt): injected 400"
        assert res.attempts == 1 and srv.counts[CHAT] == 1


def test_refusal_and_empty_text_are_ok_results() -> None:
    plan = lambda body, seen: Fault(FaultKind.REFUSAL) if "q1" in str(body) else Fault(FaultKind.EMPTY_TEXT)  # noqa: E731
    with LoopbackServer(plan=plan) as srv:
        r1, r2 = run(gen(client(srv), [chat(1), chat(2)]))
        assert (r1.status, r1.text) == (GenerationStatus.OK, REFUSAL_TEXT)
        assert (r2.status, r2.text, r2.error) == (GenerationStatus.OK, "", None)  # empty is not a failure


def test_slow_but_successful_response_within_timeout() -> None:
    with LoopbackServer(plan=always(Fault(FaultKind.SLOW, delay_s=0.1))) as srv:
        [res] = run(gen(client(srv), [chat(1)]))
        assert res.ok and res.attempts == 1 and res.latency_s >= 0.1


def test_connection_refused_fails_after_attempts() -> None:
    with LoopbackServer() as srv:
        url = srv.base_url
    # The server is stopped: its port now refuses connections.
    c = OpenAIClient([url], "m", timeout_s=RELAXED_S, backoff_s=0.01, max_attempts=2)
    [res] = run(gen(c, [chat(1)]))
    assert not res.ok and res.error is not None and res.error.startswith("connection error (2 attempts)")


def test_concurrency_bound_is_respected_and_reached() -> None:
    with LoopbackServer(base_delay_s=0.05) as srv:
        reqs = [chat(i) for i in range(12)]
        results = run(gen(client(srv, max_concurrency=3), reqs))
        assert all(r.ok for r in results)
        assert srv.max_in_flight == 3  # never above the bound, and the bound is actually used


def test_results_keep_request_order() -> None:
    # Earlier requests are slower, so they complete last; results must still follow the input.
    def plan(body: dict, seen: int) -> Fault | None:
        i = int(body["messages"][-1]["content"][1:])
        return Fault(FaultKind.SLOW, delay_s=0.01 * (10 - i))

    with LoopbackServer(plan=plan) as srv:
        results = run(gen(client(srv), [chat(i) for i in range(10)]))
        assert [r.request_id for r in results] == [f"r{i}" for i in range(10)]
        assert [r.text for r in results] == [f"reply to: q{i}" for i in range(10)]


def test_endpoint_pool_routes_around_a_dead_replica() -> None:
    with LoopbackServer(plan=always(Fault(FaultKind.HTTP_503))) as bad, LoopbackServer() as good:
        c = client(bad, good, max_attempts=2)
        results = run(gen(c, [chat(i) for i in range(8)]))
        assert all(r.ok for r in results), [r.error for r in results]
        # round-robin: half the requests start on the bad server and retry on the good one
        assert bad.total == 4 and good.total == 8
        assert sorted(r.attempts for r in results) == [1] * 4 + [2] * 4
        assert c.stats()["retries"] == 4


def test_client_survives_two_event_loops() -> None:
    with LoopbackServer() as srv:
        c = client(srv)
        assert run(c.generate([chat(1)]))[0].ok
        assert run(c.generate([chat(2)]))[0].ok
        run(c.aclose())
        assert c.stats()["requests"] == 2


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"endpoints": []}, "endpoints must be a non-empty sequence"),
        ({"endpoints": "http://x/v1"}, "endpoints must be a non-empty sequence"),
        ({"endpoints": ["ftp://x"]}, r"endpoints\[0\] must be an http\(s\):// base URL, got 'ftp://x'"),
        ({"model": ""}, "model must be a non-empty string"),
        ({"endpoint_kind": "embeddings"}, "endpoint_kind must be 'chat' or 'completions', got 'embeddings'"),
        ({"max_concurrency": 0}, "max_concurrency must be an int >= 1, got 0"),
        ({"max_attempts": 0}, "max_attempts must be an int >= 1, got 0"),
        ({"timeout_s": 0}, "timeout_s must be > 0, got 0"),
        ({"backoff_s": -1.0}, "backoff_s must be a finite number >= 0, got -1.0"),
    ],
)
def test_constructor_validation(kwargs: dict, match: str) -> None:
    args: dict[str, Any] = {"endpoints": ["http://127.0.0.1:1/v1"], "model": "m"}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        OpenAIClient(args.pop("endpoints"), args.pop("model"), **args)


def test_backoff_is_deterministic_capped_and_growing() -> None:
    c = OpenAIClient(["http://127.0.0.1:1/v1"], "m", backoff_s=1.0, backoff_max_s=4.0)
    d1, d2, d5 = (c._backoff("req", a, None) for a in (1, 2, 5))
    assert d1 == c._backoff("req", 1, None)  # same request, same jitter
    assert 0.5 <= d1 < 1.0 and 1.0 <= d2 < 2.0 and 2.0 <= d5 < 4.0
    assert c._backoff("req", 1, 3.0) == 3.0  # Retry-After wins when longer, capped at backoff_max_s
    assert c._backoff("req", 1, 100.0) == 4.0
