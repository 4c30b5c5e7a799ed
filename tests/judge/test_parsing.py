"""Strict parsers per axis (good, malformed, adversarial answers) and the judge templates."""

from __future__ import annotations

import pytest

from rlpt_plugin.judge.axes import Axis, Hallucination, SafetyVerdict, SameContent, Winner, combine
from rlpt_plugin.judge.parsing import (ParseError, parse_answer, parse_factuality, parse_quality, parse_safety,
                                    parse_similarity)
from rlpt_plugin.teacher.templates import load_template, parse_template

# -- safety -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("The text is a recipe.\nDecision: safe", SafetyVerdict.SAFE),
        ("It explains how to build a bomb.\nDecision: unsafe", SafetyVerdict.UNSAFE),
        ("Decision: safe", SafetyVerdict.SAFE),
        ("reasoning\n\nDecision: unsafe\n\n   \n", SafetyVerdict.UNSAFE),  # trailing blank lines
        ("reasoning\nDECISION: SAFE", SafetyVerdict.SAFE),  # casing is not ambiguous
        ("reasoning\ndecision:unsafe", SafetyVerdict.UNSAFE),
        ("reasoning\n**Decision: safe**", SafetyVerdict.SAFE),  # markdown bold
        ("reasoning\n**Decision:** `unsafe`.", SafetyVerdict.UNSAFE),  # markup + trailing period
        ("reasoning\nFinal decision: safe", SafetyVerdict.SAFE),
        ("It is not unsafe at all, it is safe.\nDecision: safe", SafetyVerdict.SAFE),  # words in reasoning
        ("Decision: safe\nOn reflection, yes.\nDecision: safe", SafetyVerdict.SAFE),  # same value repeated
    ],
)
def test_safety_good(answer: str, expected: SafetyVerdict) -> None:
    assert parse_safety(answer) is expected
    assert parse_answer("safety", answer) is expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("  \n\n ", "empty answer"),
        ("The passage is safe.", "no decision line"),
        ("safe", "no decision line"),
        ("Decision: safe\nThe passage is a recipe.", "decision not on the last line"),  # hidden in reasoning
        ("Decision: safe or unsafe", "invalid value on the decision line"),
        ("Decision: not unsafe", "invalid value on the decision line"),
        ("Decision: unsure", "invalid value on the decision line"),
        ("Decision:", "invalid value on the decision line"),
        ("Decision: safe\nDecision: unsafe", "conflicting decisions"),
        ("Decision: unsafe\nhmm\nDecision: safe", "conflicting decisions"),
        ("Verdict: safe", "no decision line"),
        ("The decision: safe is wrong", "no decision line"),
    ],
)
def test_safety_rejected(answer: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_safety(answer)
    assert info.value.reason == reason and info.value.axis is Axis.SAFETY
    assert isinstance(info.value, ValueError)


# -- quality ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("A is coherent, B loops.\nWinner: A", Winner.A),
        ("B is better.\nWinner: B", Winner.B),
        ("Winner: b", Winner.B),
        ("WINNER: A", Winner.A),
        ("reasoning\n**Winner: B**", Winner.B),
        ("reasoning\nWinner: Candidate A", Winner.A),
        ("reasoning\nWinner: (B)", Winner.B),
        ("reasoning\nWinner: [A].", Winner.A),
        ("Candidate B is better, although B's ending... A is worse.\nWinner: B\n", Winner.B),
        ("Winner: A\nLet me double check.\nWinner: A", Winner.A),
    ],
)
def test_quality_good(answer: str, expected: Winner) -> None:
    assert parse_quality(answer) is expected
    assert parse_answer(Axis.QUALITY, answer) is expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("Both are fine.", "no decision line"),
        ("A", "no decision line"),
        ("Winner: A\nBecause it is coherent.", "decision not on the last line"),
        ("Winner: A and B", "invalid value on the decision line"),  # both claimed
        ("Winner: A/B", "invalid value on the decision line"),
        ("Winner: AB", "invalid value on the decision line"),
        ("Winner: tie", "invalid value on the decision line"),
        ("Winner: neither", "invalid value on the decision line"),
        ("Winner: C", "invalid value on the decision line"),
        ("Winner: A\nWinner: B", "conflicting decisions"),  # both claimed on separate lines
        ("The winner is A", "no decision line"),
    ],
)
def test_quality_rejected(answer: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_quality(answer)
    assert info.value.reason == reason and info.value.axis is Axis.QUALITY


# -- factuality -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"reason": "matches the reference", "hallucination": "none"}', Hallucination.NONE),
        ('{"hallucination": "possible"}', Hallucination.POSSIBLE),
        ('  {"hallucination":"definite","reason":"wrong year"}\n', Hallucination.DEFINITE),
        ('{"hallucination": "None"}', Hallucination.NONE),  # label case-insensitive
        ('{"hallucination": " DEFINITE "}', Hallucination.DEFINITE),
        ('```json\n{"hallucination": "possible", "reason": "x"}\n```', Hallucination.POSSIBLE),  # one fence
        ('```\n{"hallucination": "none"}\n```', Hallucination.NONE),
        ('{"reason": "says \\"definite\\" in the reason", "hallucination": "none"}', Hallucination.NONE),
    ],
)
def test_factuality_good(answer: str, expected: Hallucination) -> None:
    assert parse_factuality(answer) is expected
    assert parse_answer("factuality", answer) is expected


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "empty answer"),
        ("none", "text before the JSON object"),
        ('The answer is {"hallucination": "none"}', "text before the JSON object"),
        ('{"hallucination": "none"} I am confident.', "text after the JSON object"),  # extra junk
        ('{"hallucination": "none"}{"hallucination": "definite"}', "text after the JSON object"),
        ('{"hallucination": "none"', "invalid JSON"),
        ("{'hallucination': 'none'}", "invalid JSON"),
        ('{"hallucination": "none", "hallucination": "definite"}', "duplicate key"),
        ('{"hallucination": "none", "confidence": 0.9}', "unexpected keys"),
        ('{"reason": "fine"}', "missing key 'hallucination'"),
        ('{"hallucination": null}', "'hallucination' is not a string"),
        ('{"hallucination": 0.5}', "'hallucination' is not a string"),
        ('{"hallucination": "no"}', "unknown hallucination label"),  # the paper's word, not ours
        ('{"hallucination": "none|possible"}', "unknown hallucination label"),
        ('{"hallucination": "none", "reason": 3}', "'reason' is not a string"),
        ('["none"]', "text before the JSON object"),
        ('```json\n{"hallucination": "none"}', "malformed code fence"),
        ('```json\n{"hallucination": "none"}\n```\nDone.', "malformed code fence"),
    ],
)
def test_factuality_rejected(answer: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_factuality(answer)
    assert info.value.reason == reason and info.value.axis is Axis.FACTUALITY


@pytest.mark.parametrize(("answer", "expected"), [
    ('{"reason": "same site", "same_content": "yes"}', SameContent.YES),
    ('{"same_content": " No "}', SameContent.NO),
    ('```json\n{"same_content": "no", "reason": "x"}\n```', SameContent.NO),
])
def test_similarity_good(answer: str, expected: SameContent) -> None:
    assert parse_similarity(answer) is expected and parse_answer("similarity", answer) is expected


@pytest.mark.parametrize(("answer", "reason"), [
    ("yes", "text before the JSON object"),
    ('{"same_content": "yes"} sure.', "text after the JSON object"),
    ('{"hallucination": "none"}', "unexpected keys"),  # another axis's answer
    ('{"reason": "fine"}', "missing key 'same_content'"),
    ('{"same_content": true}', "'same_content' is not a string"),
    ('{"same_content": "partly"}', "unknown same content label"),
])
def test_similarity_rejected(answer: str, reason: str) -> None:
    with pytest.raises(ParseError) as info:
        parse_similarity(answer)
    assert info.value.reason == reason and info.value.axis is Axis.SIMILARITY


def test_parse_error_reason_is_stable_and_message_quotes_answer() -> None:
    with pytest.raises(ParseError) as info:
        parse_factuality('{"hallucination": "maybe"}')
    assert info.value.reason == "unknown hallucination label"
    assert "'maybe'" in str(info.value) and "factuality answer rejected" in str(info.value)


def test_scores_and_combine() -> None:
    assert [v.score for v in SafetyVerdict] == [1.0, 0.0]
    assert [h.score for h in Hallucination] == [1.0, 0.5, 0.0]
    assert [s.score for s in SameContent] == [1.0, 0.0]
    per_axis = {"safety": [1.0, 0.0], Axis.QUALITY: [0.25, 1.0]}
    assert combine(per_axis, {"safety": 2.0, "quality": 0.5, "factuality": 9.0}) == [2.125, 0.5]
    with pytest.raises(ValueError, match="weights must have an entry for axis 'quality'"):
        combine(per_axis, {"safety": 1.0})
    with pytest.raises(ValueError, match="equal lengths"):
        combine({"safety": [1.0], "quality": [1.0, 0.0]}, {"safety": 1, "quality": 1})


# -- templates --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "parser", "example"),
    [
        ("judge_safety_v1", {"candidate": "C-TEXT"}, parse_safety, "Decision: safe"),
        ("judge_factuality_v1", {"prefix": "P-TEXT", "reference": "R-TEXT", "candidate": "C-TEXT"},
         parse_factuality, '{"reason": "<one short sentence>", "hallucination": "none"}'),
        ("judge_quality_v1", {"prefix": "P-TEXT", "candidate_a": "A-TEXT", "candidate_b": "B-TEXT"},
         parse_quality, "Winner: A"),
        ("judge_similarity_v1", {"prefix": "P-TEXT", "reference": "R-TEXT", "candidate": "C-TEXT"},
         parse_similarity, '{"reason": "<one short sentence>", "same_content": "yes"}'),
    ],
)
def test_judge_templates_fill_and_their_answer_format_parses(name: str, values: dict[str, str], parser, example: str) -> None:
    tpl = load_template(name)
    assert tpl.kind == "chat" and set(tpl.placeholders) == set(values)
    assert tpl.version.startswith(name.replace("_v1", "-v1").replace("_", "-") + "+")
    r = tpl.fill(values)
    assert [role for role, _ in r.messages] == ["system", "user"] and r.assistant_prefix == ""
    user = r.messages[1][1]
    for v in values.values():
        assert v in user
    assert "{candidate" not in user and "{prefix}" not in user
    parser(example)  # the answer format the template prescribes is accepted by the parser
    with pytest.raises(ValueError, match="declares its own placeholders"):
        tpl.render("p", "s")
    with pytest.raises(ValueError, match="values must have exactly the keys"):
        tpl.fill({**values, "extra": "x"})


def test_template_placeholder_declaration_rules() -> None:
    good = "version: v\nkind: chat\nplaceholders: a, b\n### user\n{a} and {b} and {\"json\": 1}\n"
    tpl = parse_template(good)
    assert tpl.placeholders == ("a", "b")
    assert tpl.fill({"a": "{b}", "b": "x"}).messages[0][1] == '{b} and x and {"json": 1}'  # single pass
    with pytest.raises(ValueError, match=r"missing placeholders \['\{b\}'\]"):
        parse_template(good.replace("{b}", "b"))
    with pytest.raises(ValueError, match=r"unknown placeholder \{prefix\}"):
        parse_template(good.replace("{a}", "{prefix}"))
    with pytest.raises(ValueError, match="comma-separated list of identifiers"):
        parse_template(good.replace("a, b", "a, 2b"))
    with pytest.raises(ValueError, match="lists a name twice"):
        parse_template(good.replace("a, b", "a, b, a"))
    with pytest.raises(ValueError, match=r"values\['a'\] must be a string"):
        tpl.fill({"a": 1, "b": "x"})  # type: ignore[dict-item]
