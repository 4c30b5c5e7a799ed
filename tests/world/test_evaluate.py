"""The oracle evaluation of generated continuations (rlpt_plugin/world/evaluate.py)."""

from __future__ import annotations

import pytest

from rlpt_plugin.world import WorldConfig, build_kb, eval_prefixes
from rlpt_plugin.world.evaluate import quality_win, score_items, summarize

CONFIG = WorldConfig(seed=3, num_entities=20, docs_per_entity=4, eval_size=20, systematic_fraction=0.3)


@pytest.fixture(scope="module")
def world():
    kb = build_kb(CONFIG)
    return kb, eval_prefixes(CONFIG, kb)


def test_the_reference_continuation_is_safe_factual_and_ties_with_itself(world):
    kb, items = world
    refs = [it["reference"] for it in items]
    summary = summarize(items, score_items(items, refs, refs, kb))
    assert summary["safety"] == 1.0 and summary["factuality"] == 1.0
    assert summary["quality_win_rate"] == 0.5  # identical texts: 0.5 in both orders
    assert summary["systematic"]["count"] + summary["ordinary"]["count"] == len(items)


def test_defective_continuations_score_lower_on_their_axis(world):
    kb, items = world
    refs = [it["reference"] for it in items]
    insult = ["is a total gloopwit ." for _ in items]
    loop = [" ".join(["in the"] * 4) + " ." for _ in items]
    s_insult = summarize(items, score_items(items, insult, refs, kb))
    s_loop = summarize(items, score_items(items, loop, refs, kb))
    assert s_insult["safety"] == 0.0
    assert s_loop["safety"] == 1.0 and s_loop["quality_win_rate"] < 0.2
    # and the clean reference beats the loop from the other side
    assert summarize(items, score_items(items, refs, loop, kb))["quality_win_rate"] > 0.8


def test_a_wrong_value_is_a_definite_hallucination(world):
    kb, items = world
    item = next(it for it in items if it["reference"].split()[0] in kb.value_sets[it["attribute"]])
    true = item["reference"].split()[0]
    wrong = next(v for v in kb.value_sets[item["attribute"]] if v != true)
    bad = item["reference"].replace(true, wrong, 1)
    (scores,) = score_items([item], [bad], [item["reference"]], kb)
    assert scores["factuality"] == 0.0 and scores["quality_win"] == 0.0


def test_quality_win_is_position_debiased(world):
    kb, items = world
    it = items[0]
    a, b = it["reference"], "bananas are yellow and soft ."
    assert quality_win(it["text"], a, b, kb) + quality_win(it["text"], b, a, kb) == 1.0


def test_misaligned_inputs_are_an_error(world):
    kb, items = world
    with pytest.raises(ValueError, match="align"):
        score_items(items, ["x"], ["x"], kb)


def _myths(kb):
    from rlpt_plugin.world.documents import myth_values

    myths = myth_values(CONFIG, kb)
    assert myths and all(v != kb.value(e, a) for (e, a), v in myths.items())  # each a WRONG value
    return myths


def test_the_target_claim_tells_the_truth_from_the_myth_another_value_and_silence(world):
    from rlpt_plugin.world.evaluate import target_claim

    kb, items = world
    myths = _myths(kb)
    item = next(it for it in items if it["systematic"] == "myth")
    myth = myths[(item["entity"], item["attribute"])]
    true = kb.value(item["entity"], item["attribute"])
    other = next(v for v in kb.value_sets[item["attribute"]] if v not in (true, myth))
    ref = item["reference"]
    assert true in ref.split()
    assert target_claim(item, ref, kb, myth) == "true"
    assert target_claim(item, ref.replace(true, myth, 1), kb, myth) == "myth"
    assert target_claim(item, ref.replace(true, other, 1), kb, myth) == "false"
    assert target_claim(item, ref.replace(true, myth, 1), kb, None) == "false"  # no myth known: just wrong
    assert target_claim(item, "is a total gloopwit .", kb, myth) == "none"
    # only the sentence completing the prefix's head counts, not a later one
    assert target_claim(item, "is a total gloopwit . " + ref, kb, myth) == "none"


def test_target_claims_are_shares_per_group(world):
    from rlpt_plugin.world.evaluate import CLAIMS, target_claims

    kb, items = world
    refs = [it["reference"] for it in items]
    shares = target_claims(items, refs, kb, _myths(kb))
    assert set(shares) == {"ordinary", "myth"}
    assert shares["myth"]["count"] == sum(it["systematic"] == "myth" for it in items)
    assert shares["ordinary"]["count"] == sum(not it["systematic"] for it in items)
    assert shares["myth"]["true"] == 1.0  # the references state the truth
    for group in shares.values():
        assert abs(sum(group[k] for k in CLAIMS) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="align"):
        target_claims(items, refs[:-1], kb, {})
