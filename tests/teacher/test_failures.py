"""Failure reasons: grouping keys, counts, examples; and the real client's 400 message, end to
end over loopback HTTP."""

from __future__ import annotations

import asyncio

from rlpt_plugin.teacher.failures import MAX_REASONS, OTHER, FailureTally, failure_reason, is_auth_failure
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, always

CTX = "maximum context length is 512 tokens, you requested {} tokens"


def test_reason_drops_attempt_counts_and_request_numbers_but_keeps_status_and_urls() -> None:
    a = failure_reason("HTTP 400 (1 attempt): " + CTX.format(621))
    b = failure_reason("HTTP 400 (4 attempts): " + CTX.format(640))
    assert a == b == "HTTP 400: maximum context length is <n> tokens, you requested <n> tokens"
    assert failure_reason("HTTP 503 (4 attempts): injected 503") == "HTTP 503: injected <n>"
    assert failure_reason("HTTP 500 (4 attempts): injected 503") != failure_reason("HTTP 503 (4 attempts): x")
    p1 = failure_reason("connection error (4 attempts): ConnectError: refused (http://10.0.0.1:8001/v1/chat)")
    p2 = failure_reason("connection error (4 attempts): ConnectError: refused (http://10.0.0.1:8002/v1/chat)")
    assert p1 != p2 and "http://10.0.0.1:8001/v1/chat" in p1
    assert failure_reason("first line 3\nsecond line") == "first line <n>"
    assert failure_reason(None) == failure_reason("  ") == "no reason given"


def test_auth_failures() -> None:
    assert is_auth_failure("HTTP 401 (1 attempt): Incorrect API key provided: ***")
    assert is_auth_failure("HTTP 403 (1 attempt): forbidden")
    assert not is_auth_failure("HTTP 400 (1 attempt): bad") and not is_auth_failure(None)
    assert not is_auth_failure("HTTP 4010")


def test_tally_counts_orders_and_keeps_the_first_example() -> None:
    tally = FailureTally()
    for n in range(600, 660):
        tally.add("HTTP 400 (1 attempt): " + CTX.format(n))
    tally.add("timeout after 2s (4 attempts): http://h:1/v1/chat/completions", count=3)
    assert tally.total == 63
    [ctx, timeout] = tally.as_list()
    assert ctx == {"reason": "HTTP 400: maximum context length is <n> tokens, you requested <n> tokens",
                   "count": 60, "example": "HTTP 400 (1 attempt): " + CTX.format(600)}
    assert timeout["count"] == 3 and timeout["reason"] == "timeout after <n>s: http://h:1/v1/chat/completions"
    lines = tally.lines()
    assert lines[0] == "  60 x HTTP 400: maximum context length is <n> tokens, you requested <n> tokens"
    assert lines[1] == "      e.g. HTTP 400 (1 attempt): " + CTX.format(600)


def test_tally_bounds_the_number_of_distinct_reasons() -> None:
    tally = FailureTally()
    for i in range(MAX_REASONS + 7):
        tally.add(f"error {'x' * i}")
    reasons = {g.reason: g.count for g in tally.reasons()}
    assert len(reasons) == MAX_REASONS + 1 and reasons[OTHER] == 7 and tally.total == MAX_REASONS + 7
    assert tally.lines(limit=2)[-1].startswith(f"  ... {MAX_REASONS - 1} more reasons")


def test_the_servers_400_message_reaches_the_reason() -> None:
    fault = Fault(FaultKind.HTTP_400, message="This model's " + CTX.format(621) + ". Please reduce the length.")
    reqs = [GenerationRequest(f"r{i}", SamplingParams(max_tokens=8), messages=(("user", f"q{i}"),)) for i in range(5)]
    with LoopbackServer(plan=always(fault)) as srv:
        c = OpenAIClient([srv.base_url], "m", timeout_s=2.0)

        async def go():
            try:
                return await c.generate(reqs)
            finally:
                await c.aclose()

        results = asyncio.run(go())
    tally = FailureTally()
    for r in results:
        assert not r.ok
        tally.add(r.error)
    [group] = tally.as_list()
    assert group["count"] == 5
    assert group["example"] == "HTTP 400 (1 attempt): This model's " + CTX.format(621) + ". Please reduce the length."
