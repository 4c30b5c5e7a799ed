"""A real HTTP judge on loopback that misbehaves, through Bridge's pretrain(): a fifth of the
requests fail in every way a server does and the run absorbs them, counting each by reason; a
judge whose answers never parse stops the run, on every rank, with the reason."""

from __future__ import annotations

import itertools
import threading

import pytest

from tests.bridge.cases import stopped_case, store_case
from tests.bridge.test_in_loop import _store_and_overrides, quality_judge
from tests.distributed.harness import run_distributed
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, request_key

pytestmark = [pytest.mark.bridge, pytest.mark.distributed]

# By a hash of the request's content: bands 0-19 (20%) fail on their first attempt, one kind of
# fault each; band 20-23 is answered with text no parser reads (every attempt with that content:
# the judge's own retry changes the seed, hence the content). The rest answer normally.
BANDS = [(range(0, 4), Fault(FaultKind.HTTP_500)), (range(4, 7), Fault(FaultKind.HTTP_503)),
         (range(7, 10), Fault(FaultKind.HANG, delay_s=3.0)), (range(10, 13), Fault(FaultKind.TRUNCATED_JSON)),
         (range(13, 16), Fault(FaultKind.RESET)), (range(16, 20), Fault(FaultKind.SLOW, delay_s=0.2))]
UNPARSABLE = range(20, 24)


def band(body: dict) -> int:
    return int(request_key(body)[:8], 16) % 100


class Chaos:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.injected: dict[str, int] = {}
        self.unparsable = 0

    def plan(self, body: dict, seen: int) -> Fault | None:
        if seen:
            return None  # a retry of the same content is answered
        for where, fault in BANDS:
            if band(body) in where:
                with self.lock:
                    self.injected[fault.kind.value] = self.injected.get(fault.kind.value, 0) + 1
                return fault
        return None

    def respond(self, body: dict) -> str:
        if band(body) in UNPARSABLE:
            with self.lock:
                self.unparsable += 1
            return "Both continuations have their merits; it is hard to say."
        return quality_judge(body)


def test_a_fifth_of_the_judge_requests_failing_is_absorbed_and_counted(tmp_path):
    chaos = Chaos()
    with LoopbackServer(responder=chaos.respond, plan=chaos.plan, max_lifetime_s=600) as judge:
        overrides = _store_and_overrides(tmp_path, judge.base_url) + [
            "train.train_iters=4", "checkpoint.save=null", "checkpoint.load=null",
            "rlpt.candidates.staleness=0",  # every request sent belongs to a step that is logged
            # 2.5 s: a hang (3 s) still times out, while an answer a loaded machine serves late
            # is not cut off (it would count as a client retry, not as the parse failure it is).
            "rlpt.judge.request_timeout_s=2.5", "rlpt.judge.max_attempts=4",
            "rlpt.judge.structured_output=off"]  # a free-text judge: its answers are read by the text parser
        (records,) = run_distributed(store_case, 1, tmp_path / "w", str(tmp_path), overrides)
    assert [r["step"] for r in records] == [0, 1, 2, 3]  # nothing lost: every step trained
    kinds = {k for k, n in chaos.injected.items() if n}
    assert kinds == {k.value for _, f in BANDS for k in [f.kind]}, chaos.injected
    retried = {"http_500", "http_503", "hang", "truncated_json", "reset"}  # a slow answer is no failure
    # Every injected failure made the client retry and is counted; so may a request that a
    # loaded machine answered (or accepted) too late: a real timeout, so a real retry too.
    assert sum(r["judge_client_retries"] for r in records) >= sum(chaos.injected[k] for k in retried) > 0
    assert sum(r["judge_http_failures"] for r in records) == 0  # the retries absorbed all of it
    # Every unreadable answer the judge received is counted (identical requests of one batch are
    # sent once and share the answer, so the judge can count more than the server served).
    assert sum(r["judge_parse_failures"] for r in records) >= chaos.unparsable > 0
    for r in records:
        assert r["unjudged_pool_rate"] == 0.0 and r["num_pairs"] > 0  # retried with fresh seeds


@pytest.mark.parametrize("layout", ["model.tensor_model_parallel_size=2", "model.pipeline_model_parallel_size=2"])
def test_a_judge_that_never_answers_usefully_stops_every_rank(tmp_path, layout):
    with LoopbackServer(responder=lambda body: "I would rather not choose.", max_lifetime_s=600) as judge:
        overrides = _store_and_overrides(tmp_path, judge.base_url) + [
            layout, "train.train_iters=8", "checkpoint.save=null", "checkpoint.load=null",
            "rlpt.judge.unjudged_window=3", "rlpt.judge.max_unjudged_share=0.5",
            "rlpt.judge.structured_output=off"]
        ranks = run_distributed(stopped_case, 2, tmp_path / "w", str(tmp_path), overrides)
    for got in ranks:
        message = got["stopped"]
        assert message is not None, got
        assert "100% of the pools of steps 0..2" in message  # stopped at the end of the window
        assert "answer: 'I would rather not choose.'" in message  # the reason, on every rank
        assert got["judge_threads"] == []  # the judge's thread was stopped on the way out
