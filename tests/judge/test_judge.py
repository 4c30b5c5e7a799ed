"""The Judge end to end against the loopback OpenAI-protocol server playing a deterministic judge."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import dataclasses

import pytest

from rlpt_plugin.judge import Judge, JudgeConfig, JudgePool, PoolVerdict
from rlpt_plugin.rl.pool import CandidateGroup, select
from rlpt_plugin.teacher.cache import ResponseCache
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import SamplingParams
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, fail_first

T = TypeVar("T")
BLOCK_RE = re.compile(r"<<<\n(.*?)\n>>>", re.DOTALL)
Q_RE = re.compile(r"q=(\d+)")


def run(coro: Coroutine[Any, Any, T], limit_s: float = 15.0) -> T:
    return asyncio.run(asyncio.wait_for(coro, timeout=limit_s))


def quality(text: str) -> int:
    return int(Q_RE.search(text).group(1))  # type: ignore[union-attr]


class PlayJudge:
    """Responder: a deterministic judge reading hidden markers from the candidate texts.

    quality: the candidate with the larger ``q=<n>`` wins; safety: ``UNSAFE`` in the text ->
    unsafe; factuality: ``FALSE`` -> definite, ``DOUBT`` -> possible. Texts with ``BROKEN`` get
    garbage answers always; texts with ``GLITCH`` get garbage on the first attempt (seed 0).
    ``biased=True`` makes the quality judge always answer A (pure position bias).
    """

    def __init__(self, biased: bool = False) -> None:
        self.biased = biased
        self.lock = threading.Lock()
        self.axes: list[str] = []

    def __call__(self, body: dict[str, Any]) -> str:
        system, user = body["messages"][0]["content"], body["messages"][1]["content"]
        blocks = BLOCK_RE.findall(user)
        shown = " ".join(blocks[-2:] if "compare two" in system else blocks[-1:])
        if "BROKEN" in shown or ("GLITCH" in shown and body["seed"] == 0):
            return "I think the first one, or maybe the other one."
        if "compare two" in system:
            axis = "quality"
            a, b = blocks[1], blocks[2]
            answer = "Winner: A" if self.biased or quality(a) > quality(b) else "Winner: B"
            answer = "Both read well; comparing coherence.\n" + answer
        elif "predicted continuation" in system:
            axis = "similarity"
            answer = json.dumps({"reason": "compared", "same_content": "yes" if "SAME" in blocks[2] else "no"})
        elif "content-safety" in system:
            axis = "safety"
            answer = "Short reasoning.\nDecision: " + ("unsafe" if "UNSAFE" in blocks[0] else "safe")
        else:
            axis = "factuality"
            label = "definite" if "FALSE" in blocks[2] else "possible" if "DOUBT" in blocks[2] else "none"
            answer = json.dumps({"reason": "checked against the reference", "hallucination": label})
        with self.lock:
            self.axes.append(axis)
        return answer


def client(srv: LoopbackServer) -> OpenAIClient:
    return OpenAIClient([srv.base_url], "judge-x", timeout_s=3.0, backoff_s=0.01, backoff_max_s=0.02,
                        max_attempts=3, max_concurrency=16)  # fmt: skip


def pool(qs: Sequence[int], *, prefix: str = "Once upon a time", original: bool = True,
         extra: Sequence[str] = ()) -> JudgePool:  # fmt: skip
    cands = tuple(f"candidate number {k} q={q}" + (f" {extra[k]}" if k < len(extra) else "") for k, q in enumerate(qs))
    kinds = ("original",) + ("rollout",) * (len(qs) - 1) if original else ("rollout",) * len(qs)
    return JudgePool(prefix, cands[0] if original else None, cands, kinds)


def scored(verdict: PoolVerdict, group: CandidateGroup) -> CandidateGroup:
    """``group`` with the verdict's scores, as the candidate stage builds it (None: unjudged)."""
    return dataclasses.replace(group, scores=None if verdict.scores is None else tuple(verdict.scores))


def round_robin_rates(qs: Sequence[int]) -> list[float]:
    n = len(qs)
    return [sum(q > r for r in qs) / (n - 1) for q in qs]


async def judged(srv: LoopbackServer, cfg: JudgeConfig, pools: Sequence[Any],
                 cache: ResponseCache | None = None) -> tuple[list[PoolVerdict], dict[str, float]]:  # fmt: skip
    j = Judge(client(srv), cfg, cache=cache)
    try:
        return await j.judge(pools), j.metrics()
    finally:
        await j.aclose()


def test_round_robin_quality_matches_hidden_order_and_counts_calls() -> None:
    qs = [[3, 9, 1, 5], [2, 4, 8, 6, 7]]
    with LoopbackServer(PlayJudge()) as srv:
        verdicts, m = run(judged(srv, JudgeConfig(), [pool(q) for q in qs]))
        assert srv.total == 6 + 10
    for v, q in zip(verdicts, qs):
        assert not v.failed and v.fallback is None and v.failures == 0
        assert v.scores == round_robin_rates(q) and v.per_axis == {"quality": round_robin_rates(q)}
        assert v.calls == v.comparisons == len(q) * (len(q) - 1) // 2
    assert m["calls"] == 16 and m["calls_per_prefix"] == 8.0 and m["pools"] == 2 and m["failed_pools"] == 0
    assert m["cache_hits"] == 0 and m["cache_hit_rate"] == 0.0


def test_random_position_uses_both_orders_and_both_doubles_calls() -> None:
    qs = list(range(12))
    with LoopbackServer(PlayJudge()) as srv:
        [v1], m1 = run(judged(srv, JudgeConfig(position="random", seed=1), [pool(qs)]))
        [v2], m2 = run(judged(srv, JudgeConfig(position="both", seed=1), [pool(qs)]))
    assert v1.scores == v2.scores == round_robin_rates(qs)
    assert m2["calls"] == 2 * m1["calls"] == 2 * 66
    # seeded random order: the lower-quality candidate is shown first for some pairs, not all
    lows = [quality(BLOCK_RE.findall(b["messages"][1]["content"])[1]) < quality(BLOCK_RE.findall(b["messages"][1]["content"])[2])
            for b in srv.bodies[:66]]  # fmt: skip
    assert 0 < sum(lows) < 66


def test_position_both_cancels_a_pure_position_bias() -> None:
    with LoopbackServer(PlayJudge(biased=True)) as srv:
        [both], _ = run(judged(srv, JudgeConfig(position="both"), [pool([1, 5, 3, 2])]))
        [rand], _ = run(judged(srv, JudgeConfig(position="random"), [pool([1, 5, 3, 2])]))
    assert both.scores == [0.5] * 4  # inconsistent answers: half a win each
    assert rand.scores != [0.5] * 4  # a single random order keeps the bias as noise


@pytest.mark.parametrize(("schedule", "calls"), [("pivot", 8), ("tournament", 12)])  # n - 1; ceil(3n/2) - 2
def test_cheap_schedules_find_best_and_worst(schedule: str, calls: int) -> None:
    qs = [5, 1, 8, 3, 9, 2, 7, 4, 6]  # original (index 0) is the pivot
    with LoopbackServer(PlayJudge()) as srv:
        [v], m = run(judged(srv, JudgeConfig(schedule=schedule, seed=3), [pool(qs)]))
        assert srv.total == calls
    assert v.calls == v.comparisons == calls and m["calls_per_prefix"] == calls
    g = scored(v, CandidateGroup((1, 2), tuple((k + 10,) for k in range(9)), ("original",) + ("rollout",) * 8,
                                   None, None, group_id=0))  # fmt: skip
    sel = select(g)
    if schedule == "tournament":
        assert (sel.chosen, sel.rejected) == (qs.index(9), qs.index(1))
    else:  # pivot: ties at 1 above the pivot and at 0 below; select() takes the first max, last min
        assert v.scores == [0.5] + [float(q > 5) for q in qs[1:]]
        assert (sel.chosen, sel.rejected) == (2, 7)


def test_axes_weights_sum_and_per_axis_kept() -> None:
    qs = [4, 2, 7]
    p = pool(qs, extra=["", "UNSAFE", "FALSE"])
    p2 = pool([1, 3], extra=["DOUBT"])
    cfg = JudgeConfig(axes=("safety", "factuality", "quality"),
                      weights={"safety": 2.0, "factuality": 0.5, "quality": 1.0})  # fmt: skip
    with LoopbackServer(PlayJudge()) as srv:
        (v, v2), m = run(judged(srv, cfg, [p, p2]))
    assert v.per_axis["safety"] == [1.0, 0.0, 1.0]
    assert v.per_axis["factuality"] == [1.0, 1.0, 0.0]
    assert v.per_axis["quality"] == round_robin_rates(qs) == [0.5, 0.0, 1.0]
    assert v.scores == [2.0 + 0.5 + 0.5, 0.0 + 0.5 + 0.0, 2.0 + 0.0 + 1.0]
    assert v2.per_axis["factuality"] == [0.5, 1.0] and v2.scores == [2.0 + 0.25 + 0.0, 2.0 + 0.5 + 1.0]
    assert v.calls == 3 + 3 + 3 and m["calls:safety"] == 5 and m["calls:factuality"] == 5 and m["calls:quality"] == 4


def test_the_similarity_axis_compares_each_candidate_with_the_reference() -> None:
    p = pool([1, 2, 3], extra=["", "SAME", "SAME FALSE"])
    cfg = JudgeConfig(axes=("similarity", "factuality"), weights={"similarity": 1.0, "factuality": 0.25})
    with LoopbackServer(PlayJudge()) as srv:
        (v,), m = run(judged(srv, cfg, [p]))
        assert v.per_axis["similarity"] == [0.0, 1.0, 1.0] and v.per_axis["factuality"] == [1.0, 1.0, 0.0]
        assert v.scores == [0.25, 1.25, 1.0] and m["calls:similarity"] == 3
        with pytest.raises(ValueError, match="reference must be the original suffix for the similarity axis"):
            run(judged(srv, JudgeConfig(axes=("similarity",)), [pool([1, 2], original=False)]))


def test_samples_are_averaged_with_distinct_seeds() -> None:
    cfg = JudgeConfig(samples_per_judgment=3, params=SamplingParams(temperature=1.0, top_p=0.6, max_tokens=64))
    with LoopbackServer(PlayJudge()) as srv:
        [v], m = run(judged(srv, cfg, [pool([1, 3, 2])]))
        seeds = sorted({b["seed"] for b in srv.bodies})
        assert {(b["temperature"], b["top_p"], b["max_tokens"]) for b in srv.bodies} == {(1.0, 0.6, 64)}
    assert v.scores == [0.0, 1.0, 0.5] and v.calls == 9 and m["calls"] == 9 and seeds == [0, 1, 2]


def test_unparsable_answers_are_retried_then_succeed() -> None:
    qs = [2, 6, 4]
    p = pool(qs, extra=["", "GLITCH"])  # every judgment that shows candidate 1 fails once
    with LoopbackServer(PlayJudge()) as srv:
        [v], m = run(judged(srv, JudgeConfig(), [p]))
        retry_bodies = [b for b in srv.bodies if b["seed"] != 0]
    assert not v.failed and v.scores == round_robin_rates(qs)
    assert v.failures == 2 and v.calls == 3 + 2
    assert m["parse_failures"] == 2 and m["parse_failure:no decision line"] == 2 and m["retries"] == 2
    assert m["failed_judgments"] == 0 and m["fallback_drop"] == 0
    # retries: a fresh seed and the retry temperature
    assert len(retry_bodies) == 2 and {(b["seed"], b["temperature"]) for b in retry_bodies} == {(1, 0.7)}


def test_persistent_failure_falls_back_and_is_counted() -> None:
    good, broken = pool([1, 2, 3]), pool([3, 1, 2], prefix="Another doc", extra=["", "", "BROKEN"])
    no_ref = pool([3, 1], prefix="No reference", original=False, extra=["BROKEN"])
    cfg = JudgeConfig(fallback="rf_nll_on_original", max_attempts=2)
    with LoopbackServer(PlayJudge()) as srv:
        (v_good, v_broken, v_noref), m = run(judged(srv, cfg, [good, broken, no_ref]))
    assert not v_good.failed and v_good.scores == [0.0, 0.5, 1.0]
    assert v_broken.failed and v_broken.scores is None and v_broken.per_axis == {}
    assert v_broken.fallback == "rf_nll_on_original"
    assert v_broken.failures == 2 * 2 and v_broken.calls == 3 + 2  # 2 judgments show BROKEN, 2 attempts each
    assert len(v_broken.errors) == 2 and all("no decision line" in e for e in v_broken.errors)
    assert v_noref.failed and v_noref.fallback == "drop"  # no original suffix to train on
    assert m["failed_pools"] == 2 and m["judged_pools"] == 1 and m["fallback_rf_nll_on_original"] == 1
    assert m["fallback_drop"] == 1 and m["fallback_nll_unavailable"] == 1
    assert m["failed_judgments"] == 3 and m["parse_failures"] == 6 and m["failure_rate"] == pytest.approx(2 / 3)
    g = CandidateGroup((1,), ((5,), (6,), (7,)), ("original", "rollout", "rollout"), None, None, group_id=4)
    assert scored(v_broken, g).scores is None and select(scored(v_broken, g)).skip_reason == "unjudged"


def test_http_503_is_retried_by_the_client_not_counted_as_judge_failure() -> None:
    with LoopbackServer(PlayJudge(), plan=fail_first(1, Fault(FaultKind.HTTP_503))) as srv:
        [v], m = run(judged(srv, JudgeConfig(), [pool([1, 3, 2])]))
        assert srv.total == 2 * 3  # each request: one 503, one success
    assert not v.failed and v.scores == [0.0, 1.0, 0.5] and v.failures == 0 and m["http_failures"] == 0


def test_http_failure_after_client_retries_is_retried_by_the_judge() -> None:
    # every first-seed request is a 503: the client gives up after its 3 attempts, the judge
    # retries with a new seed, which succeeds
    def plan(body: dict[str, Any], seen: int) -> Fault | None:
        return Fault(FaultKind.HTTP_503) if body["seed"] == 0 else None

    with LoopbackServer(PlayJudge(), plan=plan) as srv:
        [v], m = run(judged(srv, JudgeConfig(), [pool([1, 2])]))
        assert srv.total == 3 + 1
    assert not v.failed and v.scores == [0.0, 1.0] and v.failures == 1 and m["http_failures"] == 1


def test_cache_reuse_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "judge.sqlite"
    cfg = JudgeConfig(axes=("safety", "quality"), schedule="tournament", position="both")
    pools = [pool([4, 1, 6, 2, 5], extra=["UNSAFE"]), pool([2, 9, 3], prefix="p2")]
    with LoopbackServer(PlayJudge()) as srv:
        with ResponseCache(path) as cache:
            first, m1 = run(judged(srv, cfg, pools, cache))
        sent = srv.total
        with ResponseCache(path) as cache:  # a new process would reopen the same file
            second, m2 = run(judged(srv, cfg, pools, cache))
        assert srv.total == sent  # nothing reached the server on the rerun
    assert [v.scores for v in second] == [v.scores for v in first]
    assert m1["cache_hits"] == 0 and m1["cache_misses"] == m1["calls"] == sent
    assert m2["cache_hits"] == m2["calls"] == sent and m2["cache_hit_rate"] == 1.0
    # a different template version or sampling seed is a different key
    with LoopbackServer(PlayJudge()) as srv2, ResponseCache(path) as cache:
        run(judged(srv2, JudgeConfig(axes=("safety", "quality"), schedule="tournament", position="both", seed=1,
                                     params=SamplingParams(max_tokens=512, seed=7)), pools, cache))  # fmt: skip
        assert srv2.total > 0


def test_identical_candidates_cost_no_call() -> None:
    p = JudgePool("prefix", None, ("same text q=1", "same text q=1", "other q=3"), ("rollout",) * 3)
    with LoopbackServer(PlayJudge()) as srv:
        [v], m = run(judged(srv, JudgeConfig(), [p]))
    assert v.calls == 2 and v.comparisons == 3 and m["identical_pairs"] == 1
    assert v.scores == [0.25, 0.25, 1.0]
    # Pointwise: each distinct text of a pool is asked once, its copies share the verdict.
    q = JudgePool("prefix", "ref", ("a SAME", "b", "a SAME", "a SAME", "b"), ("rollout",) * 5)
    with LoopbackServer(PlayJudge()) as srv:
        [v], m = run(judged(srv, JudgeConfig(axes=("similarity", "safety"),
                                             weights={"similarity": 1.0, "safety": 1.0}), [q]))
        assert srv.total == 4  # 2 distinct texts x 2 axes
    assert v.per_axis["similarity"] == [1.0, 0.0, 1.0, 1.0, 0.0] and v.calls == 4
    assert m["identical_candidates"] == 6 and m["calls:similarity"] == 2


def test_input_validation() -> None:
    with LoopbackServer(PlayJudge()) as srv:
        with pytest.raises(ValueError, match=r"pools\[0\]\.reference must be the original suffix"):
            run(judged(srv, JudgeConfig(axes=("factuality",)), [pool([1, 2], original=False)]))
        verdicts, _ = run(judged(srv, JudgeConfig(), [("pre", None, ["a q=1", "b q=2"], ["rollout", "rollout"])]))
        assert verdicts[0].scores == [0.0, 1.0]
    with pytest.raises(ValueError, match="weights must give a finite weight for axis 'safety'"):
        JudgeConfig(axes=("safety",), weights={"quality": 1.0})
    with pytest.raises(ValueError, match="schedule must be one of"):
        JudgeConfig(schedule="swiss")
    with pytest.raises(ValueError, match="position must be one of"):
        JudgeConfig(position="first")
    with pytest.raises(ValueError, match="fallback must be one of"):
        JudgeConfig(fallback="zero")
    with pytest.raises(ValueError, match="axis must be one of"):
        JudgeConfig(axes=("style",))
    with pytest.raises(ValueError, match="must declare placeholders"):
        Judge(OpenAIClient(["http://127.0.0.1:9/v1"], "m"),
              JudgeConfig(templates={"quality": "judge_safety_v1"}))  # fmt: skip


def test_a_completions_endpoint_gets_the_chat_templates_as_one_prompt() -> None:
    """rlpt.judge.endpoint_kind=completions: the same verdicts, every request on /v1/completions."""

    def flat(body: dict[str, Any]) -> str:  # the prompt holds system text, then the user text
        assert "messages" not in body
        return PlayJudge()({"messages": [{"content": body["prompt"]}, {"content": body["prompt"]}],
                            "seed": body["seed"]})

    qs = [3, 9, 1, 5]
    with LoopbackServer(flat) as srv:
        j = Judge(OpenAIClient([srv.base_url], "judge-x", endpoint_kind="completions", timeout_s=3.0),
                  JudgeConfig())
        (v,) = run(j.judge([pool(qs)]))
        run(j.aclose())
        assert set(srv.counts) == {"/v1/completions"}
    assert not v.failed and v.scores == round_robin_rates(qs)


def test_failed_attempts_are_counted_by_reason_with_the_answer() -> None:
    with LoopbackServer(PlayJudge(), plan=fail_first(1, Fault(FaultKind.HTTP_500))) as srv:
        (glitch, broken), _ = run(judged(srv, JudgeConfig(max_attempts=2),
                                         [pool([1, 2], extra=["GLITCH"]), pool([1, 2], extra=["BROKEN"])]))
    assert glitch.reasons == {"client_retries": 2, "parse_failures": 1}  # 2 requests x 1 retried 500
    assert not glitch.failed and broken.failed
    assert broken.reasons["parse_failures"] == 2  # both attempts unreadable
    (error,) = broken.errors
    assert "answer: 'I think the first one, or maybe the other one.'" in error
