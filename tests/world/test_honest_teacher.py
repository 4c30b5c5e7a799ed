"""The training teacher differs from the grader: partial knowledge, an imperfect rewriter, noise;
and equally good continuations are ties (0.5) in evaluation and in the pool judge."""

from __future__ import annotations

import asyncio

import pytest

from rlpt_plugin.judge.pools import JudgePool
from rlpt_plugin.rl.pool import CandidateGroup, select
from rlpt_plugin.world.documents import clean_sentence
from rlpt_plugin.world import (WorldConfig, build_kb, factuality, generate_corpus, oracle_rewrite,
                               quality_outcome, quality_prefers, systematic_contexts, teacher_view, vocab)
from rlpt_plugin.world.evaluate import quality_win
from rlpt_plugin.world.knowledge import TeacherKnowledge
from rlpt_plugin.world.teacher import OracleJudge

CFG = WorldConfig(seed=3, num_entities=60, docs_per_entity=4)
KB = build_kb(CFG)
TEACHER = teacher_view(KB, 0.8, seed=CFG.seed)


def _known_and_unknown(kb: TeacherKnowledge):
    known = next((e, a) for e in kb.entities for a in vocab.ATTRIBUTES if kb.knows(e.id, a))
    unknown = next((e, a) for e in kb.entities for a in vocab.ATTRIBUTES if not kb.knows(e.id, a))
    return known, unknown


def test_the_teacher_knows_a_seeded_share_of_the_facts():
    assert isinstance(TEACHER, TeacherKnowledge)
    assert 0.75 < TEACHER.known_share() < 0.85  # 300 facts, share 0.8
    again = teacher_view(KB, 0.8, seed=CFG.seed)
    facts = [(e.id, a) for e in KB.entities for a in vocab.ATTRIBUTES]
    assert [TEACHER.knows(*f) for f in facts] == [again.knows(*f) for f in facts]
    other = teacher_view(KB, 0.8, seed=CFG.seed + 1)
    assert [TEACHER.knows(*f) for f in facts] != [other.knows(*f) for f in facts]
    assert teacher_view(KB, 1.0, seed=0) is KB and all(KB.knows(*f) for f in facts)
    with pytest.raises(ValueError, match="knowledge share"):
        teacher_view(KB, 1.5, seed=0)


def test_on_a_fact_it_does_not_know_the_judge_trusts_the_reference():
    (ke, ka), (ue, ua) = _known_and_unknown(TEACHER)
    for entity, attribute, known in ((ke, ka, True), (ue, ua, False)):
        true = entity.attributes[attribute]
        myth = next(v for v in KB.value_sets[attribute] if v != true)
        prefix = clean_sentence(entity, "city" if attribute != "city" else "field")
        truth, false = clean_sentence(entity, attribute), clean_sentence(entity, attribute, value=myth)
        # The grader always knows; the reference (the corpus's suffix) states the myth.
        assert factuality(prefix, false, truth, KB) == 1.0 and factuality(prefix, false, false, KB) == 0.0
        if known:
            assert factuality(prefix, false, truth, TEACHER) == 1.0
            assert factuality(prefix, false, false, TEACHER) == 0.0
        else:  # cannot tell the myth from the truth: it sides with the reference
            assert factuality(prefix, false, truth, TEACHER) == 0.0
            assert factuality(prefix, false, false, TEACHER) == 1.0
            assert factuality(prefix, "", truth, TEACHER) == 0.5  # nothing to trust: possible
            # Nor does its quality judge count the myth as a false claim.
            assert quality_prefers(prefix, truth, false, TEACHER) is None
            assert quality_prefers(prefix, truth, false, KB).value == "A"
            # Its rewriter keeps the myth.
            assert oracle_rewrite(prefix, false, TEACHER) == false
            assert oracle_rewrite(prefix, false, KB) == truth


def test_the_rewriter_misses_and_introduces_errors_at_the_configured_rates():
    corpus = generate_corpus(WorldConfig(seed=4, num_entities=60, docs_per_entity=6, false_rate=0.1,
                                         unsafe_rate=0.1, degenerate_rate=0.1))
    kb = build_kb(WorldConfig(seed=4, num_entities=60))
    windows = []
    for doc in corpus:
        words = doc["text"].split()
        windows.append((" ".join(words[:8]), " ".join(words[8:24])))
    exact = [oracle_rewrite(p, s, kb) for p, s in windows]
    missed = [oracle_rewrite(p, s, kb, miss_rate=0.3, seed=1) for p, s in windows]
    fixed = [s != e for (_, s), e in zip(windows, exact)]
    assert sum(fixed) > 100
    left = sum(m == s for (_, s), m, f in zip(windows, missed, fixed) if f) / sum(fixed)
    assert 0.15 < left < 0.5  # a window holds one or more defects, each missed with p = 0.3
    assert [oracle_rewrite(p, s, kb, miss_rate=0.3, seed=1) for p, s in windows] == missed
    erred = [oracle_rewrite(p, s, kb, error_rate=0.1, seed=1) for p, s in windows]
    values = sum(t in vocab.VALUE_ATTRIBUTE for e in exact for t in e.split())
    changed = sum(a != b for e, r in zip(exact, erred) for a, b in zip(e.split(), r.split()))
    assert 0.06 < changed / values < 0.14
    assert all(len(r.split()) == len(s.split()) for (_, s), r in zip(windows, erred))
    with pytest.raises(ValueError, match="miss_rate"):
        oracle_rewrite("", "a", kb, miss_rate=2.0)


def test_equal_quality_is_a_tie_in_evaluation_and_in_the_pool_judge():
    e = KB[0]
    prefix = clean_sentence(e, "birth_year")
    a, b = clean_sentence(e, "city"), clean_sentence(e, "field")  # two different correct sentences
    assert quality_prefers(prefix, a, b, KB) is None and quality_outcome(prefix, a, b, KB) == 0.5
    assert quality_win(prefix, a, b, KB) == 0.5 == quality_win(prefix, b, a, KB)
    assert quality_outcome(prefix, a, a, KB) == 0.5
    loop = "born in born in born in ."
    assert quality_win(prefix, a, loop, KB) == 1.0 and quality_win(prefix, loop, a, KB) == 0.0
    # A pool of equally good candidates: equal scores, so the selection makes no pair ...
    judge = OracleJudge(KB, axes=("quality", "safety", "factuality"), weights=dict.fromkeys(
        ("quality", "safety", "factuality"), 1.0))
    cands = (a, b, clean_sentence(e, "employer"))
    v = asyncio.run(judge.judge([JudgePool(prefix, a, cands, ("original", "rollout", "rollout"))]))
    assert v.per_axis[0]["quality"] == [0.5, 0.5, 0.5]
    group = CandidateGroup(group_id=0, prefix=(1,), candidates=((1,), (2,), (3,)),
                           kinds=("original", "rollout", "rollout"), scores=tuple(v.scores[0]), ref_logps=None)
    assert select(group).skip_reason == "all_tied"
    # ... and when a worse candidate joins, the corpus text (pool index 0) wins the tie at the top.
    v = asyncio.run(judge.judge([JudgePool(prefix, a, cands + (loop,), ("original", "rollout", "rollout", "rollout"))]))
    scores = v.scores[0]
    assert scores[0] == scores[1] == scores[2] > scores[3]
    group = CandidateGroup(group_id=0, prefix=(1,), candidates=((1,), (2,), (3,), (4,)),
                           kinds=("original", "rollout", "rollout", "rollout"), scores=tuple(scores), ref_logps=None)
    s = select(group)
    assert (s.chosen, s.rejected) == (0, 3)


def test_the_judge_from_config_is_the_honest_teacher_by_default():
    from rlpt_plugin.config import ConfigError, RLPTConfig

    cfg = RLPTConfig()
    cfg.data.source, cfg.data.stores, cfg.data.tokenizer = "store", ["/s"], "world"
    cfg.judge.backend, cfg.judge.world_entities, cfg.judge.world_seed = "world", 60, 3
    cfg.validate()
    judge = cfg.judge.build(seed=cfg.data.seed)
    assert judge.noise_rate == 0.1 and judge.knowledge == 0.8
    facts = [(e.id, a) for e in KB.entities for a in vocab.ATTRIBUTES]
    assert [judge.kb.knows(*f) for f in facts] == [TEACHER.knows(*f) for f in facts]  # the rewriter's view
    cfg.judge.world_knowledge = 1.5
    with pytest.raises(ConfigError, match="world_knowledge"):
        cfg.validate()


def test_some_systematic_myths_are_unknown_to_the_teacher():
    """The honest teacher cannot fix every myth: on the ones it does not know the corpus wins."""
    myths = [c for c in systematic_contexts(CFG, KB) if c["kind"] == "myth"]
    unknown = [c for c in myths if not TEACHER.knows(c["entity"], c["attribute"])]
    assert myths and 0 < len(unknown) < len(myths)
