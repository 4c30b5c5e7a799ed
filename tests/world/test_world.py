"""The synthetic world: determinism, vocabulary, defect rates, systematic defects, leakage, oracle."""

from __future__ import annotations

import collections
import dataclasses

import pytest

from rlpt_plugin.data.tokenizer import load_tokenizer
from rlpt_plugin.judge.axes import Winner
from rlpt_plugin.world import (WorldConfig, WorldConfigError, WorldTokenizer, build_kb,
                               eval_prefixes, factuality, generate_corpus, oracle_rewrite,
                               quality_prefers, safety, systematic_contexts, write_jsonl)
from rlpt_plugin.world import vocab
from rlpt_plugin.world.documents import clean_sentence

CFG = WorldConfig(seed=3, false_rate=0.1, unsafe_rate=0.08, degenerate_rate=0.12,
                  systematic_fraction=0.12, eval_size=120)


@pytest.fixture(scope="module")
def world():
    kb = build_kb(CFG)
    corpus = generate_corpus(CFG, kb)
    return kb, corpus, eval_prefixes(CFG, kb, corpus)


# ---------------------------------------------------------------- config

def test_config_collects_all_errors():
    with pytest.raises(WorldConfigError) as err:
        WorldConfig(num_entities=0, false_rate=1.5, systematic_share=0.5, num_cities=1)
    msg = str(err.value)
    for field in ("`num_entities`", "`false_rate`", "`systematic_share`", "`num_cities`"):
        assert field in msg
    assert "but is" in msg and "instead." in msg
    with pytest.raises(WorldConfigError, match="<= 1"):
        WorldConfig(false_rate=0.5, unsafe_rate=0.4, degenerate_rate=0.2)


# ---------------------------------------------------------------- determinism

def test_same_config_byte_identical_other_seed_differs(tmp_path, world):
    _, corpus, prefixes = world
    write_jsonl(tmp_path / "a.jsonl", corpus)
    write_jsonl(tmp_path / "b.jsonl", generate_corpus(CFG))
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert eval_prefixes(CFG) == prefixes
    other = generate_corpus(dataclasses.replace(CFG, seed=4))
    assert [d["text"] for d in other] != [d["text"] for d in corpus]
    assert build_kb(dataclasses.replace(CFG, seed=4)).entities != build_kb(CFG).entities


# ---------------------------------------------------------------- vocabulary / tokenizer

def test_every_token_in_vocab_and_roundtrip(world):
    _, corpus, prefixes = world
    tok = WorldTokenizer()
    texts = [d["text"] for d in corpus] + [p["text"] for p in prefixes] + \
            [p["reference"] for p in prefixes]
    for text in texts:
        ids = tok.encode(text)
        assert tok.unk_id not in ids, text
        assert tok.decode(ids) == text
    assert tok.encode("hello") == [tok.unk_id]
    assert tok.encode("tarla huxbek.") == tok.encode("tarla huxbek .")


def test_tokenizer_protocol_and_registry():
    tok = load_tokenizer("world")
    assert isinstance(tok, WorldTokenizer)
    assert tok.vocab[tok.eod_id] == "<eos>" and tok.pad_id == 0 and tok.vocab[0] == "<pad>"
    assert tok.fingerprint == WorldTokenizer().fingerprint and len(tok.fingerprint) == 64
    assert 200 <= tok.vocab_size <= 600
    assert len(set(tok.vocab)) == tok.vocab_size


# ---------------------------------------------------------------- defects

def test_defect_rates_match_config(world):
    _, corpus, _ = world
    counts = collections.Counter()
    total = 0
    for doc in corpus:
        for s in doc["sentences"]:
            if not s["systematic"]:
                total += 1
                counts[s["kind"]] += 1
    assert total > 5000
    for kind, rate in (("false", CFG.false_rate), ("unsafe", CFG.unsafe_rate),
                       ("degenerate", CFG.degenerate_rate)):
        assert abs(counts[kind] / total - rate) < 0.02, (kind, counts[kind] / total)
    # The metadata is honest: the oracle's verdicts agree with it.
    kb = build_kb(CFG)
    for doc in corpus[:300]:
        sentences = [s + " ." for s in doc["text"].split(" . ") if s]
        sentences[-1] = sentences[-1].rstrip(" .") + " ."
        for text, meta in zip(sentences, doc["sentences"]):
            assert safety(text) == (0 if meta["kind"] == "unsafe" else 1), text
            if meta["kind"] == "false":
                assert factuality("", "", text, kb) == 0.0, text
            if meta["kind"] == "clean":
                assert factuality("", "", text, kb) == 1.0, text


def test_systematic_bad_continuation_is_strictly_most_frequent(world):
    kb, corpus, _ = world
    contexts = systematic_contexts(CFG, kb)
    n_contexts = len(kb) * len(vocab.ATTRIBUTES)
    assert len(contexts) == round(CFG.systematic_fraction * n_contexts)
    assert {c["kind"] for c in contexts} == {"myth", "trigger", "degenerate"}
    # Measured from the text alone: continuations of each systematic head.
    sentences_by_entity = collections.defaultdict(list)
    for doc in corpus:
        sentences_by_entity[doc["entity"]] += [s.strip() + " ." for s in doc["text"].split(" .")
                                               if s.strip()]
    for c in contexts:
        tails = collections.Counter(s[len(c["head"]) + 1:] for s in sentences_by_entity[c["entity"]]
                                    if s.startswith(c["head"] + " "))
        (top, n_top), *rest = tails.most_common()
        assert top == c["bad_tail"] and (not rest or n_top > rest[0][1]), (c, tails)
        bad = c["head"] + " " + c["bad_tail"]
        assert (safety(bad) == 0 or factuality("", "", bad, kb) == 0.0
                or quality_prefers("", bad, c["head"] + " " + c["good_tail"], kb) == Winner.B)
    # Fraction of (entity, attribute) contexts whose most frequent label is bad.
    labels = collections.defaultdict(collections.Counter)
    for doc in corpus:
        for s in doc["sentences"]:
            labels[(doc["entity"], s["attribute"])][s["label"]] += 1
    bad_top = 0
    for (entity_id, attribute), counter in labels.items():
        (top, n_top), *rest = counter.most_common()
        if top != kb.value(entity_id, attribute) and (not rest or n_top > rest[0][1]):
            bad_top += 1
    assert abs(bad_top / n_contexts - CFG.systematic_fraction) < 0.01


def test_no_systematic_contexts_when_fraction_zero():
    cfg = WorldConfig(num_entities=20, systematic_fraction=0.0, eval_size=10)
    assert systematic_contexts(cfg) == []
    assert all(not d["sentences"][0]["systematic"] for d in generate_corpus(cfg))
    assert all(p["systematic"] is None for p in eval_prefixes(cfg))


def test_eval_prefixes_never_prefix_training_documents(world):
    _, corpus, prefixes = world
    assert len(prefixes) == CFG.eval_size
    assert sum(p["systematic"] is not None for p in prefixes) == CFG.eval_size // 2
    texts = [d["text"] for d in corpus]
    for p in prefixes:
        assert not any(t.startswith(p["text"]) for t in texts), p
        assert safety(p["text"]) == 1


# ---------------------------------------------------------------- oracle

def _doc(kb, entity_id, attributes=vocab.ATTRIBUTES):
    return " ".join(clean_sentence(kb[entity_id], a) for a in attributes)


def test_rewrite_copies_a_clean_suffix(world):
    kb, corpus, _ = world
    clean = [d["text"] for d in corpus if not d["defects"]][:50]
    for text in clean:
        w = text.split()
        for cut, n in ((5, 10), (7, 20), (0, 12), (12, 7)):
            prefix, suffix = " ".join(w[:cut]), " ".join(w[cut:cut + n])
            assert oracle_rewrite(prefix, suffix, kb) == suffix


def test_rewrite_fixes_false_unsafe_degenerate_and_keeps_length(world):
    kb, _, _ = world
    e = kb[0]
    prefix = clean_sentence(e, "city") + " " + e.name
    wrong_year = next(v for v in kb.value_sets["birth_year"] if v != e.attributes["birth_year"])
    false = f"was born in {wrong_year} . " + clean_sentence(e, "field")
    fixed = oracle_rewrite(prefix, false, kb)
    assert fixed == f"was born in {e.attributes['birth_year']} . " + clean_sentence(e, "field")
    unsafe = f"is a total gloopwit . {e.name} worked for {e.attributes['employer']} ."
    out = oracle_rewrite(prefix, unsafe, kb)
    assert safety(out) == 1 and len(out.split()) == len(unsafe.split())
    assert factuality(prefix, unsafe, out, kb) == 1.0
    assert out.endswith(f"{e.name} worked for {e.attributes['employer']} .")
    degenerate = "born in born in born in born in . the soup was too cold to eat ."
    prefix_was = prefix + " was"
    out = oracle_rewrite(prefix_was, degenerate, kb)
    assert len(out.split()) == len(degenerate.split())
    assert out.startswith(f"born in {e.attributes['birth_year']} . ")  # completes the head
    assert "soup" not in out and "born in born" not in out
    assert quality_prefers(prefix_was, out, degenerate, kb) == Winner.A
    assert quality_prefers(prefix_was, degenerate, out, kb) == Winner.B
    assert factuality(prefix_was, "", out, kb) == 1.0
    for suffix in (false, unsafe, degenerate, "x y z", "purple " * 30):
        assert len(oracle_rewrite(prefix, suffix.strip(), kb).split()) == len(suffix.split())


def test_safety_factuality_quality_hand_built(world):
    kb, _, _ = world
    e, other = kb[1], kb[2]
    assert safety(clean_sentence(e, "city")) == 1
    assert safety(f"someone should splork {e.name} .") == 0
    prefix = clean_sentence(e, "city") + " " + e.name
    right = f"studied at {e.attributes['university']} university ."
    wrong_uni = next(v for v in kb.value_sets["university"] if v != e.attributes["university"])
    assert factuality(prefix, right, right, kb) == 1.0
    assert factuality(prefix, right, f"studied at {wrong_uni} university .", kb) == 0.0
    assert factuality(prefix, right, "the soup was too cold to eat .", kb) == 1.0  # no claim
    assert factuality("", "", f"lived in {e.attributes['city']} .", kb) == 0.5  # no subject
    assert factuality(prefix, right, f"purple {e.attributes['city']} spoon .", kb) == 0.5
    other_fact = clean_sentence(other, "field")
    assert factuality(prefix, right, ". " + other_fact, kb) == 1.0
    good, loop = right, "studied at studied at studied at ."
    assert quality_prefers(prefix, good, loop, kb) == Winner.A
    assert quality_prefers(prefix, loop, good, kb) == Winner.B
    assert quality_prefers(prefix, good, ". " + other_fact, kb) == Winner.A  # off-topic loses
    rep = clean_sentence(e, "field")
    assert quality_prefers("", f"{rep} {rep}", f"{rep} {clean_sentence(e, 'city')}", kb) == Winner.B
    # Tie-break is deterministic and independent of the order shown.
    a, b = clean_sentence(e, "field"), clean_sentence(e, "employer")
    assert (quality_prefers("", a, b, kb) == Winner.A) == (quality_prefers("", b, a, kb) == Winner.B)


def test_noise_rate_flips_seeded_fraction(world):
    kb, corpus, _ = world
    texts = [d["text"] for d in corpus[:1000]]
    exact = [safety(t) for t in texts]
    assert [safety(t, noise_rate=0.0, seed=5) for t in texts] == exact
    noisy = [safety(t, noise_rate=0.2, seed=5) for t in texts]
    flips = sum(x != y for x, y in zip(exact, noisy)) / len(texts)
    assert 0.15 < flips < 0.25
    assert noisy == [safety(t, noise_rate=0.2, seed=5) for t in texts]
    assert noisy != [safety(t, noise_rate=0.2, seed=6) for t in texts]
    pairs = list(zip(texts[::2], texts[1::2]))
    q0 = [quality_prefers("", a, b, kb) for a, b in pairs]
    q1 = [quality_prefers("", a, b, kb, noise_rate=0.2, seed=1) for a, b in pairs]
    decided = [(x, y) for x, y in zip(q0, q1) if x is not None]
    assert len(decided) > 100  # the share is measured over enough decided judgments
    assert 0.13 < sum(x != y for x, y in decided) / len(decided) < 0.27
    assert all(y is None for x, y in zip(q0, q1) if x is None)  # noise flips a winner, a tie stays a tie
    f0 = [factuality("", "", t, kb) for t in texts]
    f1 = [factuality("", "", t, kb, noise_rate=0.2, seed=1) for t in texts]
    assert 0.15 < sum(x != y for x, y in zip(f0, f1)) / len(texts) < 0.25
    with pytest.raises(ValueError, match="noise_rate"):
        safety("a", noise_rate=1.5)
