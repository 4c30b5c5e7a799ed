"""Structured verdicts (schemas, the exact JSON parser, the request fields, ``auto``'s downgrade)
and reasoning models' separate reasoning, against the loopback server."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest

from rlpt_plugin import config as rlpt_config
from rlpt_plugin import config_judge
from rlpt_plugin.judge import Judge, JudgeConfig, JudgePool
from rlpt_plugin.judge.axes import Axis, Hallucination, SafetyVerdict, SameContent, Winner
from rlpt_plugin.judge.judge import CUT_OFF_WHILE_REASONING
from rlpt_plugin.judge.parsing import ParseError
from rlpt_plugin.judge.structured import MODES, REASON_MAX_CHARS, grammar, parse_json_verdict, schema, structured_output
from rlpt_plugin.teacher.cache import ResponseCache
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams
from tests.teacher.loopback_server import Fault, FaultKind, LoopbackServer, Reply, always

BLOCK_RE = re.compile(r"<<<\n(.*?)\n>>>", re.DOTALL)


def run(coro: Any, limit_s: float = 15.0) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout=limit_s))


def client(srv: LoopbackServer, kind: str = "chat") -> OpenAIClient:
    return OpenAIClient([srv.base_url], "judge-x", endpoint_kind=kind, timeout_s=3.0, backoff_s=0.01,  # type: ignore[arg-type]
                        backoff_max_s=0.02, max_attempts=2)


POOL = JudgePool("Once upon a time", "the original", ("first q=1", "second q=2"), ("original", "rollout"))


def json_judge(body: dict[str, Any]) -> str:
    """The schema's JSON for the axis whose template the request carries; the larger text wins."""
    whole = json.dumps(body)
    text = body["messages"][-1]["content"] if "messages" in body else body["prompt"]
    blocks = BLOCK_RE.findall(text)
    if "compare two" in whole:
        a, b = blocks[1], blocks[2]
        return json.dumps({"reason": "b is richer", "winner": "A" if a > b else "B"})
    if "content-safety" in whole:
        return json.dumps({"reason": "harmless", "decision": "safe"})
    return json.dumps({"reason": "matches", "hallucination": "none"})


# -- schemas and the exact parser -------------------------------------------------------------


@pytest.mark.parametrize(("axis", "text", "want"), [
    (Axis.SAFETY, '{"reason": "fine", "decision": "unsafe"}', SafetyVerdict.UNSAFE),
    (Axis.FACTUALITY, '{"reason": "", "hallucination": "possible"}', Hallucination.POSSIBLE),
    (Axis.QUALITY, '  {"reason":"x","winner":"B"}\n', Winner.B),
    (Axis.SIMILARITY, '{"reason": "same site", "same_content": "yes"}', SameContent.YES),
    (Axis.QUALITY, '{"winner": "A", "reason": "order of keys is free"}', Winner.A),
    (Axis.QUALITY, '{"reason": "raw \x19 control\tcharacters", "winner": "B"}', Winner.B),
])
def test_the_exact_json_form_parses(axis, text, want):
    assert parse_json_verdict(axis, text) == want


@pytest.mark.parametrize(("axis", "text", "reason"), [
    (Axis.QUALITY, "", "empty answer"),
    (Axis.QUALITY, "Winner: A", "not a JSON object"),
    (Axis.QUALITY, '```json\n{"reason": "x", "winner": "A"}\n```', "not a JSON object"),
    (Axis.QUALITY, '{"reason": "x", "winner": "a"}', "'winner' is not one of the schema's values"),
    (Axis.QUALITY, '{"reason": "x", "winner": "A"} trailing', "invalid JSON"),
    (Axis.QUALITY, '{"reason": "x", "winner": "A"', "invalid JSON"),
    (Axis.QUALITY, '{"reason": "x", "winner": "A", "winner": "B"}', "duplicate key"),
    (Axis.QUALITY, '{"winner": "A"}', "keys are not exactly the schema's"),
    (Axis.QUALITY, '{"reason": "x", "winner": "A", "score": 1}', "keys are not exactly the schema's"),
    (Axis.SAFETY, '{"reason": 3, "decision": "safe"}', "'reason' is not a string"),
    (Axis.SAFETY, '{"reason": "x", "decision": "Safe"}', "'decision' is not one of the schema's values"),
    (Axis.FACTUALITY, '{"reason": "x", "hallucination": " none"}', "'hallucination' is not one of the schema's values"),
    (Axis.FACTUALITY, '{"reason": "x", "hallucination": null}', "'hallucination' is not one of the schema's values"),
    (Axis.FACTUALITY, '["none"]', "not a JSON object"),
])
def test_anything_else_is_rejected(axis, text, reason):
    with pytest.raises(ParseError) as err:
        parse_json_verdict(axis, text)
    assert err.value.reason == reason


def test_schemas_and_grammars_name_each_axis_decision():
    for axis, key, values in ((Axis.SAFETY, "decision", ["safe", "unsafe"]),
                              (Axis.FACTUALITY, "hallucination", ["none", "possible", "definite"]),
                              (Axis.QUALITY, "winner", ["A", "B"]),
                              (Axis.SIMILARITY, "same_content", ["yes", "no"])):
        s = schema(axis)
        assert s["required"] == ["reason", key] and s["properties"][key]["enum"] == values
        assert s["properties"]["reason"]["maxLength"] == REASON_MAX_CHARS and s["additionalProperties"] is False
        g = grammar(axis)
        assert g.startswith("root ::= ") and f'\\"{key}\\"' in g and f"char{{0,{REASON_MAX_CHARS}}}" in g
        for v in values:
            assert json.dumps(json.dumps(v)) in g
    assert structured_output(Axis.QUALITY, "grammar").grammar == grammar(Axis.QUALITY)
    assert structured_output(Axis.QUALITY, "json_schema").grammar == ""


def test_config_modes_match_the_judge_and_are_validated():
    assert config_judge.STRUCTURED_OUTPUT_MODES is MODES  # one list, the judge's
    section = config_judge.JudgeSection(structured_output="json")
    assert any("structured_output` must be one of" in e for e in section.validate("rlpt.judge", False))
    section = config_judge.JudgeSection(structured_output="json_object", endpoint_kind="completions")
    assert any("json_object is a chat-route field" in e for e in section.validate("rlpt.judge", False))
    assert not any("structured_output" in e for e in config_judge.JudgeSection().validate("rlpt.judge", False))
    with pytest.raises(ValueError, match="structured_output must be one of"):
        JudgeConfig(structured_output="yes")


def test_the_format_is_part_of_the_cache_key_and_free_text_keys_are_unchanged():
    plain = GenerationRequest("r", SamplingParams(), messages=(("user", "hi"),))
    assert "structured" not in plain.params.as_dict()  # keys of caches written before stay valid
    keys = {ResponseCache.key_for("m", "v1", plain)}
    for kind in ("json_schema", "json_object", "grammar"):
        req = GenerationRequest("r", SamplingParams(structured=structured_output(Axis.QUALITY, kind)),
                                messages=(("user", "hi"),))
        keys.add(ResponseCache.key_for("m", "v1", req))
    req = GenerationRequest("r", SamplingParams(structured=structured_output(Axis.SAFETY, "json_schema")),
                            messages=(("user", "hi"),))
    keys.add(ResponseCache.key_for("m", "v1", req))
    assert len(keys) == 5


# -- request fields ---------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "kind"), [("json_schema", "chat"), ("json_object", "chat"),
                                            ("grammar", "chat"), ("grammar", "completions"),
                                            ("json_schema", "completions")])
def test_each_mode_sends_its_field_and_accepts_only_the_json(mode, kind):
    with LoopbackServer(responder=json_judge) as srv:
        judge = Judge(client(srv, kind), JudgeConfig(axes=("quality", "safety"), structured_output=mode))
        (v,) = run(judge.judge([POOL]))
        assert not v.failed and v.per_axis[Axis.QUALITY] == [0.0, 1.0], v.errors
        for body in srv.bodies:
            axis = "quality" if "compare two" in json.dumps(body) else "safety"
            if mode == "json_schema":
                fmt = body["response_format"]
                assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
                assert fmt["json_schema"]["schema"] == schema(Axis(axis)) and "grammar" not in body
            elif mode == "json_object":
                assert body["response_format"] == {"type": "json_object", "schema": schema(Axis(axis))}
            else:
                assert body["grammar"] == grammar(Axis(axis)) and "response_format" not in body
    # The same server answering free text: explicit modes accept only the schema's JSON.
    with LoopbackServer(responder=lambda body: "Reasoning.\nWinner: A") as srv:
        judge = Judge(client(srv, kind), JudgeConfig(structured_output=mode, max_attempts=2))
        (v,) = run(judge.judge([POOL]))
        assert v.failed and judge.metrics()["parse_failure:not a JSON object"] == 2


def test_json_object_on_a_completions_endpoint_is_refused_up_front():
    with pytest.raises(ValueError, match="json_object' needs a chat endpoint"):
        Judge(OpenAIClient(["http://127.0.0.1:9/v1"], "m", endpoint_kind="completions"),
              JudgeConfig(structured_output="json_object"))


def test_auto_moves_to_the_next_form_when_the_server_rejects_the_field(caplog):
    # Like llama-cpp-python 0.3.36: response_format type json_schema is a 422 naming the field.
    message = "[{'type': 'literal_error', 'loc': ('body', 'response_format', 'type'), 'msg': \"Input should be 'text' or 'json_object'\"}]"
    plan = always(Fault(FaultKind.HTTP_400, message=message), match='"type": "json_schema"')
    with LoopbackServer(responder=json_judge, plan=plan) as srv:
        judge = Judge(client(srv), JudgeConfig(axes=("quality", "safety"), structured_output="auto"))
        assert judge.structured_kind == "json_schema"
        v1, v2 = run(judge.judge([POOL, POOL]))
        assert not v1.failed and not v2.failed
        assert judge.structured_kind == "json_object"
        m = judge.metrics()
        assert m["structured_output_downgrades"] == 1 and m["parse_failures"] == 0 and m["failed_judgments"] == 0
        # Rejected requests were resent without costing an attempt (no retries counted).
        assert m["retries"] == 0 and m["http_failures"] == 0
        later = srv.bodies[-1]
        assert later["response_format"]["type"] == "json_object"
        (v3,) = run(judge.judge([POOL]))
        assert not v3.failed and all(b["response_format"]["type"] == "json_object" for b in srv.bodies[-3:])
    assert "rejected structured output 'json_schema'" in caplog.text


def test_auto_does_not_switch_off_for_an_unrelated_400():
    plan = always(Fault(FaultKind.HTTP_400, message="This model's maximum context length is 4096 tokens"))
    with LoopbackServer(responder=json_judge, plan=plan) as srv:
        judge = Judge(client(srv), JudgeConfig(structured_output="auto", max_attempts=2))
        (v,) = run(judge.judge([POOL]))
        assert v.failed and judge.structured_kind == "json_schema"
        assert judge.metrics()["structured_output_downgrades"] == 0


@pytest.mark.parametrize(("kind", "second", "field"), [("chat", "json_object", "response_format"),
                                                       ("completions", "grammar", "grammar")])
def test_auto_reads_text_answers_of_a_server_that_ignores_the_field(kind, second, field):
    # Free text to a constrained request: the field was ignored; each form is tried once, then
    # free text, and the text parser reads the answers (no failure, no attempt spent).
    with LoopbackServer(responder=lambda body: "Reasoning.\nWinner: B") as srv:
        judge = Judge(client(srv, kind), JudgeConfig(structured_output="auto"))
        (v,) = run(judge.judge([POOL]))
        m = judge.metrics()
        assert not v.failed and m["parse_failures"] == 0 and m["retries"] == 0
        assert m["structured_output_downgrades"] == 2 and judge.structured_kind is None
        assert [b.get("response_format", {}).get("type") or (field if field in b else None) for b in srv.bodies] \
            == ["json_schema", second, None]
        (v,) = run(judge.judge([POOL]))
        assert not v.failed and "response_format" not in srv.bodies[-1] and "grammar" not in srv.bodies[-1]
    with LoopbackServer(responder=lambda body: '{"reason": "x", "winner": "C"}') as srv:
        judge = Judge(client(srv), JudgeConfig(structured_output="auto", max_attempts=1))
        (v,) = run(judge.judge([POOL]))
        # A JSON answer is reported with the JSON parser's reason, not the text parser's.
        assert v.failed and judge.metrics()["parse_failure:'winner' is not one of the schema's values"] == 1


# -- reasoning models -------------------------------------------------------------------------


def test_the_verdict_comes_from_the_answer_never_from_the_reasoning():
    for field in ("reasoning_content", "reasoning"):
        reply = Reply("Short.\nWinner: B", reasoning="Let me think... A is better.\nWinner: A", reasoning_field=field)
        with LoopbackServer(responder=lambda body, r=reply: r) as srv:
            judge = Judge(client(srv), JudgeConfig(structured_output="off"))
            (v,) = run(judge.judge([POOL]))
            assert not v.failed
            # B won as shown, whichever order the pool was shown in: one candidate scores 1, it is B.
            body = srv.bodies[0]
            shown_b = BLOCK_RE.findall(body["messages"][-1]["content"])[2]
            assert v.scores[POOL.candidates.index(shown_b)] == 1.0


def test_the_client_keeps_the_reasoning_apart():
    reply = Reply("the answer", reasoning="the thinking")
    with LoopbackServer(responder=lambda body: reply) as srv:
        (res,) = run(client(srv).generate([GenerationRequest("x", SamplingParams(), messages=(("user", "q"),))]))
    assert res.ok and res.text == "the answer" and res.reasoning == "the thinking"
    # Cut off while thinking: content null, reasoning present -> an ok, empty answer (no retries).
    reply = Reply(None, reasoning="still thinking about it", finish_reason="length")
    with LoopbackServer(responder=lambda body: reply) as srv:
        (res,) = run(client(srv).generate([GenerationRequest("x", SamplingParams(), messages=(("user", "q"),))]))
        assert srv.total == 1
    assert res.ok and res.text == "" and res.finish_reason == "length" and res.reasoning == "still thinking about it"
    # No content and no reasoning is still a malformed response.
    with LoopbackServer(responder=lambda body: Reply(None)) as srv:
        (res,) = run(client(srv).generate([GenerationRequest("x", SamplingParams(), messages=(("user", "q"),))]))
    assert not res.ok and "response without choices[0].message.content" in res.error


@pytest.mark.parametrize("content", [None, "", "  \n"])
def test_an_answer_cut_off_while_reasoning_is_a_clear_counted_failure(content):
    reply = Reply(content, reasoning="Let me weigh both. A seems... Winner: A", finish_reason="length")
    with LoopbackServer(responder=lambda body: reply) as srv:
        judge = Judge(client(srv), JudgeConfig(structured_output="auto", max_attempts=2))
        (v,) = run(judge.judge([POOL]))
    assert v.failed and v.scores is None
    m = judge.metrics()
    assert m["reasoning_cutoffs"] == 2 and m[f"parse_failure:{CUT_OFF_WHILE_REASONING}"] == 2
    assert v.errors and CUT_OFF_WHILE_REASONING in v.errors[0]


def test_an_empty_answer_that_stopped_normally_is_just_empty():
    with LoopbackServer(responder=lambda body: Reply("", reasoning="hmm")) as srv:
        judge = Judge(client(srv), JudgeConfig(max_attempts=1))
        (v,) = run(judge.judge([POOL]))
    assert v.failed and judge.metrics()["reasoning_cutoffs"] == 0 and judge.metrics()["parse_failure:empty answer"] == 1


@pytest.mark.parametrize(("mode", "kind", "first"), [("auto", "chat", "json_schema"), ("off", "chat", None),
                                                     ("grammar", "completions", "grammar")])
def test_the_config_setting_reaches_the_judge(mode, kind, first):
    rlpt = rlpt_config.RLPTConfig()
    rlpt.judge.endpoints, rlpt.judge.model = ["http://127.0.0.1:9/v1"], "m"
    rlpt.judge.structured_output, rlpt.judge.endpoint_kind = mode, kind
    judge = rlpt.judge.build_teacher_judge(seed=rlpt.data.seed)
    assert judge.config.structured_output == mode and judge.structured_kind == first
    assert config_judge.JudgeSection().structured_output == "auto"
