"""The world's two-hop facts, its thought annotator and the exact reasoning grader."""

from __future__ import annotations

import pytest

from rlpt_plugin.world import WorldConfig, WorldTokenizer, build_kb, generate_corpus, vocab
from rlpt_plugin.world.reasoning import (ReasoningConfig, ReasoningConfigError, annotate, employer_sites,
                                         reasoning_corpus, reasoning_prefixes, same_content,
                                         people_split, recall_probes, score_reasoning, split_sentences, strip_thoughts,
                                         thought_of, without_two_hop)

CONFIG = WorldConfig(seed=3, num_entities=40, docs_per_entity=3, eval_size=10)
REASONING = ReasoningConfig(eval_size=60, company_docs=4)


@pytest.fixture(scope="module")
def world():
    kb = build_kb(CONFIG)
    return kb, reasoning_corpus(CONFIG, REASONING, kb, generate_corpus(CONFIG, kb))


def test_the_reasoning_vocabulary_extends_the_classic_one_which_is_unchanged():
    """The classic world's tokenizer, models and sampled rollouts are untouched by reasoning."""
    classic = (vocab.SPECIALS + vocab.PUNCT + vocab.TEMPLATE_WORDS + vocab.FILLER_WORDS
               + vocab.FIRST_NAMES + vocab.LAST_NAMES + vocab.YEARS + vocab.CITIES + vocab.UNIVERSITIES
               + vocab.FIELDS + vocab.EMPLOYERS + vocab.INSULTS + vocab.THREATS)
    assert vocab.VOCAB == classic and len(classic) == 292
    assert vocab.REASONING_VOCAB[: len(classic)] == classic
    assert set(vocab.REASONING_VOCAB[len(classic):]) == set(vocab.REASONING_WORDS + vocab.SITES)
    plain, reasoning = WorldTokenizer(), WorldTokenizer(reasoning=True)
    assert plain.name == "world" and reasoning.name == "world-reasoning"
    assert plain.fingerprint != reasoning.fingerprint
    assert plain.encode("<think>") == [plain.unk_id] and reasoning.encode("<think>") != [reasoning.unk_id]


def test_trained_people_carry_the_two_hop_sentence_and_held_out_people_never_do(world):
    """Trained people state it in the even half, RL people in the odd (RL) half only."""
    kb, corpus = world
    split = people_split(CONFIG, REASONING, kb)
    trained = split["trained"]
    assert len(trained) == round(0.4 * len(kb))
    assert len(split["rl"]) == round(0.3 * len(kb)) and len(split["held_out"]) == len(kb) - len(trained) - len(split["rl"])
    assert not (split["trained"] & split["rl"]) and not (split["held_out"] & (split["trained"] | split["rl"]))
    sites = employer_sites(CONFIG)
    assert set(sites) == set(CONFIG.value_sets()["employer"]) and set(sites.values()) <= set(vocab.SITES)
    names = {e.name: e for e in kb.entities}
    bios = [d for d in corpus if d["entity"] >= 0]
    assert len(bios) == len(kb) * CONFIG.docs_per_entity
    for doc in bios:
        entity = kb[doc["entity"]]
        said = [w for w in doc["text"].split() if w in vocab.SITES]
        stating = split["trained"] if doc["id"] % 2 == 0 else split["rl"]
        if entity.id in stating:
            site = sites[entity.attributes["employer"]]
            assert said == [site] and doc["two_hop"]["site"] == site
            assert (" commutes to " in doc["text"]) != (" travels to " in doc["text"])
        else:
            assert said == [] and doc["two_hop"] is None
        assert entity.name in names
    companies = [d for d in corpus if d["entity"] == -1]
    assert len(companies) == REASONING.company_docs
    for doc in companies:  # a directory: every employer once, with its own site
        assert sorted(doc["companies"]) == sorted(sites)
        for sentence in split_sentences(doc["text"]):
            words = sentence.split()
            employer = next(w for w in words if w in sites)
            assert [w for w in words if w in vocab.SITES] == [sites[employer]]
    assert [d["id"] for d in corpus] == list(range(len(corpus)))


def test_without_two_hop_gives_the_biography_before_the_sentence_was_inserted(world):
    kb, corpus = world
    plain = {d["id"]: d["text"] for d in generate_corpus(CONFIG, kb)}
    hops = 0
    for doc in corpus:
        stripped = without_two_hop(doc)
        assert stripped["two_hop"] is None and stripped is not doc
        if doc["entity"] >= 0:
            assert stripped["text"] == plain[doc["id"]]  # the world's text, word for word
            hops += doc["two_hop"] is not None
        else:
            assert stripped == doc
    assert hops > 0


def test_the_default_world_is_unchanged_by_reasoning():
    kb = build_kb(CONFIG)
    plain = generate_corpus(CONFIG, kb)
    assert not any(w in vocab.SITES or w in vocab.REASONING_WORDS for d in plain for w in d["text"].split())


def test_the_exact_annotator_inserts_the_right_step_and_changes_no_word(world):
    kb, corpus = world
    tok = WorldTokenizer(reasoning=True)
    sites = employer_sites(CONFIG)
    thoughts = 0
    for doc in corpus:
        text = annotate(doc, CONFIG, REASONING, kb)
        assert strip_thoughts(text) == doc["text"]
        assert tok.decode(tok.encode(text)) == text and tok.unk_id not in tok.encode(text)
        if doc["two_hop"] is None:
            assert text == doc["text"]
            continue
        thoughts += 1
        entity = kb[doc["entity"]]
        employer = entity.attributes["employer"]
        thought = thought_of(text).split()
        assert employer in thought and sites[employer] in thought and entity.last in thought
        # The thought sits right before the site it explains.
        words = text.split()
        assert words[words.index(vocab.THINK_CLOSE) + 1] == sites[employer]
    assert thoughts == sum(d["two_hop"] is not None for d in corpus) > 0


def test_an_imperfect_annotator_misses_and_errs_but_never_changes_the_text(world):
    kb, corpus = world
    hops = [d for d in corpus if d["two_hop"] is not None]
    missing = ReasoningConfig(eval_size=1, annotator_miss=1.0)
    assert all(annotate(d, CONFIG, missing, kb) == d["text"] for d in hops)
    wrong = ReasoningConfig(eval_size=1, annotator_error=1.0)
    for doc in hops:
        text = annotate(doc, CONFIG, wrong, kb)
        assert strip_thoughts(text) == doc["text"]
        assert kb[doc["entity"]].attributes["employer"] not in thought_of(text).split()
    half = ReasoningConfig(eval_size=1, annotator_miss=0.5)
    share = sum(annotate(d, CONFIG, half, kb) == d["text"] for d in hops) / len(hops)
    assert 0.3 < share < 0.7


def test_held_out_prefixes_ask_for_the_step_about_held_out_people_only(world):
    kb, corpus = world
    held_out = people_split(CONFIG, REASONING, kb)["held_out"]
    items = reasoning_prefixes(CONFIG, REASONING, kb)
    assert len(items) == REASONING.eval_size
    texts = [d["text"] for d in corpus]
    for item in items:
        entity = kb[item["entity"]]
        assert entity.id in held_out and item["employer"] == entity.attributes["employer"]
        assert item["employer"] not in item["text"].split()  # recalled, not read
        assert item["text"].endswith(("commutes to", "travels to"))
        assert item["reference"] == f"{employer_sites(CONFIG)[item['employer']]} ."
        assert not any(t.startswith(item["text"]) for t in texts)


def test_the_recall_probes_ask_each_hop_directly(world):
    kb, corpus = world
    probes = recall_probes(CONFIG, REASONING, kb)
    held_out = people_split(CONFIG, REASONING, kb)["held_out"]
    sites = employer_sites(CONFIG)
    people = [p for p in probes if p["kind"] == "employer"]
    assert len(people) == len(held_out) and len(probes) == len(held_out) + len(sites)
    for p in probes:
        assert p["reference"] == f"{p['answer']} ."
        if p["kind"] == "site":  # the fact is stated in the corpus (in one of its phrasings)
            employer = p["text"].split()[0]
            assert any(employer in s.split() and p["answer"] in s.split()
                       for d in corpus if d["entity"] == -1 for s in split_sentences(d["text"]))
    for p in people:
        entity = kb.by_name(*p["text"].split()[:2])
        assert entity.id in held_out and p["answer"] == entity.attributes["employer"]
    assert {p["answer"] for p in probes if p["kind"] == "site"} <= set(sites.values())


def test_the_grader_reads_the_answer_after_the_thought(world):
    kb, _ = world
    item = reasoning_prefixes(CONFIG, REASONING, kb)[0]
    entity, site, employer = kb[item["entity"]], item["site"], item["employer"]
    wrong = next(s for s in vocab.SITES if s != site)
    assert score_reasoning(item, f"{site} .", CONFIG) == {"correct": 1.0, "thought": 0.0,
                                                          "thought_correct": 0.0, "thought_tokens": 0.0}
    right_thought = f"<think> {entity.name} worked for {employer} . {employer} is based in {site} . </think>"
    scored = score_reasoning(item, f"{right_thought} {site} .", CONFIG)
    assert scored["correct"] == scored["thought"] == scored["thought_correct"] == 1.0
    assert scored["thought_tokens"] == len(right_thought.split()) - 2
    other = next(e for e in employer_sites(CONFIG) if e != employer)
    scored = score_reasoning(item, f"<think> {entity.name} worked for {other} . </think> {wrong} .", CONFIG)
    assert scored["correct"] == scored["thought_correct"] == 0.0 and scored["thought"] == 1.0
    assert score_reasoning(item, f"<think> {site} {site}", CONFIG)["thought"] == 0.0  # unclosed
    assert score_reasoning(item, "", CONFIG)["correct"] == 0.0


def test_same_content_compares_the_first_sentence_without_thoughts():
    assert same_content("<think> a b . </think> ironport . more words", "ironport . other")
    assert not same_content("sunhill .", "ironport .")
    assert not same_content("", "")
    assert strip_thoughts("x <think> y <think> z </think> w </think> v") == "x v"


def test_bad_reasoning_configs_are_refused():
    with pytest.raises(ReasoningConfigError, match="trained_share"):
        ReasoningConfig(trained_share=1.0)
    with pytest.raises(ReasoningConfigError, match=r"trained_share \+ rl_share"):
        ReasoningConfig(trained_share=0.6, rl_share=0.4)
    with pytest.raises(ReasoningConfigError, match="annotator_miss"):
        ReasoningConfig(annotator_miss=1.5)
    with pytest.raises(ReasoningConfigError, match="company_docs"):
        ReasoningConfig(company_docs=0)
