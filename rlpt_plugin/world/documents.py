"""The raw corpus: short biographies with controlled defects, and the held-out eval prefixes.

A document is one sentence per attribute of one person, in a random order, each sentence from
one of several paraphrase templates (:data:`rlpt_plugin.world.vocab.TEMPLATES`). Sentences of
ordinary contexts carry a defect with the configured rates:

* ``false``: the attribute value is replaced by another value of the same attribute;
* ``unsafe``: the sentence is replaced by a mild synthetic insult or threat aimed at the person;
* ``degenerate``: the sentence is replaced by a repetition loop, word salad or an off-topic one.

A context is an (entity, attribute) pair. A ``systematic_fraction`` of contexts are SYSTEMATIC:
all their sentences start with one fixed *head* and in ``systematic_share`` (> 0.5) of the
entity's documents the head is followed by one fixed bad *tail*, so the bad continuation is
strictly the most frequent one in the corpus. Kinds, assigned in turn: ``myth`` (a wrong value),
``trigger`` (head "it is said that <name>", tail an insult), ``degenerate`` (the template's head
followed by a repetition loop). :func:`systematic_contexts` lists them.

Everything is a pure function of the :class:`WorldConfig` (seeded ``random.Random`` streams).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

from rlpt_plugin.world import vocab
from rlpt_plugin.world.config import WorldConfig
from rlpt_plugin.world.kb import Entity, KnowledgeBase, build_kb

SYSTEMATIC_KINDS: tuple[str, ...] = ("myth", "trigger", "degenerate")
UNSAFE_LABEL, DEGENERATE_LABEL = "<unsafe>", "<degenerate>"


def render(template: str, entity: Entity, value: str = "", *, insult: str = "",
           threat: str = "") -> str:
    """``template`` with N -> the full name, V -> value, X -> insult, T -> threat."""
    fill = {"N": entity.name, "V": value, "X": insult, "T": threat}
    return " ".join(fill.get(w, w) for w in template.split())


def head_of(template: str, entity: Entity) -> str:
    """The words of ``template`` before the value slot, name filled in."""
    words = template.split()
    return render(" ".join(words[: words.index("V")]), entity)


def clean_sentence(entity: Entity, attribute: str, template_index: int = 0,
                   value: str | None = None) -> str:
    value = entity.attributes[attribute] if value is None else value
    return render(vocab.TEMPLATES[attribute][template_index], entity, value)


def _unsafe_sentence(rng: random.Random, entity: Entity) -> str:
    frame = rng.choice(vocab.UNSAFE_FRAMES)
    words = []
    for w in frame.split():
        if w == "X":
            words.append(rng.choice(vocab.INSULTS))
        elif w == "T":
            words.append(rng.choice(vocab.THREATS))
        else:
            words.append(entity.name if w == "N" else w)
    return " ".join(words)


def _loop(head: str, repeats: int = 4) -> str:
    """A repetition loop continuing ``head``: its last two words again and again."""
    tail = head.split()[-2:]
    return " ".join(tail * repeats) + " ."


def _degenerate_sentence(rng: random.Random, entity: Entity, attribute: str,
                         template: str) -> str:
    kind = rng.randrange(3)
    if kind == 0:
        head = head_of(template, entity)
        return f"{head} {_loop(head, rng.randint(3, 6))}"
    if kind == 1:
        return " ".join(rng.choice(vocab.FILLER_WORDS) for _ in range(rng.randint(5, 10))) + " ."
    return rng.choice(vocab.OFF_TOPIC)


def systematic_contexts(config: WorldConfig, kb: KnowledgeBase | None = None) -> list[dict[str, Any]]:
    """The systematic contexts: ``{"entity", "attribute", "kind", "head", "bad_tail",
    "good_tail", "bad_docs", "bad_value"}`` (``bad_docs``: indices, within the entity's
    documents, of the documents carrying ``bad_tail``; ``bad_value``: a myth's wrong value, None
    for the other kinds), sorted by (entity, attribute)."""
    kb = build_kb(config) if kb is None else kb
    rng = random.Random(f"rlpt-world-systematic:{config.seed}")
    contexts = [(e.id, a) for e in kb.entities for a in vocab.ATTRIBUTES]
    count = round(config.systematic_fraction * len(contexts))
    chosen = sorted(rng.sample(contexts, count))
    kinds = [SYSTEMATIC_KINDS[i % 3] for i in range(count)]
    rng.shuffle(kinds)
    n_docs = config.docs_per_entity
    n_bad = max(n_docs // 2 + 1, math.ceil(config.systematic_share * n_docs - 1e-9))
    out = []
    for (entity_id, attribute), kind in zip(chosen, kinds):
        entity = kb[entity_id]
        template = vocab.TEMPLATES[attribute][0]
        good_value = entity.attributes[attribute]
        head = head_of(template, entity)
        rest = template.split()[template.split().index("V"):]
        good_tail = render(" ".join(rest), entity, good_value)
        bad_value = None
        if kind == "myth":
            wrong = [v for v in kb.value_sets[attribute] if v != good_value]
            bad_value = rng.choice(wrong)
            bad_tail = render(" ".join(rest), entity, bad_value)
        elif kind == "trigger":
            # The trigger head ends at the name; the clean continuation is template 0 after it.
            good_tail = render(" ".join(template.split()[1:]), entity, good_value)
            head = f"{vocab.TRIGGER} {entity.name}"
            # One insult per person: two trigger contexts of a person share the head.
            insult = random.Random(f"rlpt-world-insult:{config.seed}:{entity_id}").choice(
                vocab.INSULTS)
            bad_tail = f"is a total {insult} ."
        else:
            bad_tail = _loop(head)
        bad_docs = sorted(rng.sample(range(n_docs), n_bad))
        out.append({"entity": entity_id, "attribute": attribute, "kind": kind, "head": head,
                    "bad_tail": bad_tail, "good_tail": good_tail, "bad_docs": bad_docs,
                    "bad_value": bad_value})
    return out


def myth_values(config: WorldConfig, kb: KnowledgeBase | None = None) -> dict[tuple[int, str], str]:
    """(entity, attribute) -> the wrong value the corpus states most often, for every systematic
    myth context of the world."""
    return {(c["entity"], c["attribute"]): c["bad_value"] for c in systematic_contexts(config, kb)
            if c["kind"] == "myth"}


def generate_corpus(config: WorldConfig, kb: KnowledgeBase | None = None) -> list[dict[str, Any]]:
    """The training corpus: ``{"id", "text", "entity", "defects", "sentences"}`` per document.

    ``defects``: ``{"sentence", "attribute", "kind", "systematic"}`` per defective sentence
    (kind in false / unsafe / degenerate). ``sentences``: ``{"attribute", "kind", "label",
    "systematic"}`` per sentence, where ``label`` is the claimed value, "<unsafe>" or
    "<degenerate>" (what the context (entity, attribute) is continued with).
    """
    kb = build_kb(config) if kb is None else kb
    systematic = {(c["entity"], c["attribute"]): c for c in systematic_contexts(config, kb)}
    rng = random.Random(f"rlpt-world-corpus:{config.seed}")
    templates = {a: vocab.TEMPLATES[a][: config.templates_per_attribute] for a in vocab.ATTRIBUTES}
    docs = []
    for entity in kb.entities:
        for d in range(config.docs_per_entity):
            order = list(vocab.ATTRIBUTES)
            rng.shuffle(order)
            texts, defects, sentences = [], [], []
            for i, attribute in enumerate(order):
                good_value = entity.attributes[attribute]
                context = systematic.get((entity.id, attribute))
                if context is not None:
                    bad = d in context["bad_docs"]
                    tail = context["bad_tail"] if bad else context["good_tail"]
                    texts.append(f"{context['head']} {tail}")
                    kind = {"myth": "false", "trigger": "unsafe",
                            "degenerate": "degenerate"}[context["kind"]] if bad else "clean"
                    label = {"false": tail.split()[0], "unsafe": UNSAFE_LABEL,
                             "degenerate": DEGENERATE_LABEL, "clean": good_value}[kind]
                    sentences.append({"attribute": attribute, "kind": kind, "label": label,
                                      "systematic": True})
                    if bad:
                        defects.append({"sentence": i, "attribute": attribute, "kind": kind,
                                        "systematic": True})
                    continue
                template = rng.choice(templates[attribute])
                r = rng.random()
                if r < config.false_rate:
                    kind = "false"
                    value = rng.choice([v for v in kb.value_sets[attribute] if v != good_value])
                    text, label = render(template, entity, value), value
                elif r < config.false_rate + config.unsafe_rate:
                    kind, text, label = "unsafe", _unsafe_sentence(rng, entity), UNSAFE_LABEL
                elif r < config.false_rate + config.unsafe_rate + config.degenerate_rate:
                    kind = "degenerate"
                    text = _degenerate_sentence(rng, entity, attribute, template)
                    label = DEGENERATE_LABEL
                else:
                    kind, text, label = "clean", render(template, entity, good_value), good_value
                texts.append(text)
                sentences.append({"attribute": attribute, "kind": kind, "label": label,
                                  "systematic": False})
                if kind != "clean":
                    defects.append({"sentence": i, "attribute": attribute, "kind": kind,
                                    "systematic": False})
            docs.append({"id": len(docs), "text": " ".join(texts), "entity": entity.id,
                         "defects": defects, "sentences": sentences})
    return docs


def eval_prefixes(config: WorldConfig, kb: KnowledgeBase | None = None,
                  corpus: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Held-out prefixes: ``{"text", "entity", "attribute", "systematic", "reference"}``.

    Each is one to four clean sentences of a fresh biography followed by the head of a target
    sentence (``systematic``: the kind of a systematic target, else None; half the prefixes aim
    at systematic contexts when there are any); ``reference`` is the correct rest of the target
    sentence. No prefix is a prefix of any training document.
    """
    kb = build_kb(config) if kb is None else kb
    corpus = generate_corpus(config, kb) if corpus is None else corpus
    by_entity: dict[int, list[str]] = {}
    for doc in corpus:
        by_entity.setdefault(doc["entity"], []).append(doc["text"])
    systematic = systematic_contexts(config, kb)
    rng = random.Random(f"rlpt-world-eval:{config.seed}")
    n_sys = config.eval_size // 2 if systematic else 0
    sys_order = list(systematic)
    rng.shuffle(sys_order)
    sys_keys = {(c["entity"], c["attribute"]): c for c in systematic}
    out = []
    for i in range(config.eval_size):
        if i < n_sys:
            ctx = sys_order[i % len(sys_order)]
            entity, attribute = kb[ctx["entity"]], ctx["attribute"]
            head, reference, kind = ctx["head"], ctx["good_tail"], ctx["kind"]
        else:
            entity = kb[rng.randrange(len(kb))]
            attribute = rng.choice(vocab.ATTRIBUTES)
            if (entity.id, attribute) in sys_keys:
                ctx = sys_keys[(entity.id, attribute)]
                head, reference = ctx["head"], ctx["good_tail"]
            else:
                t = rng.randrange(config.templates_per_attribute)
                template = vocab.TEMPLATES[attribute][t]
                head = head_of(template, entity)
                reference = render(template, entity, entity.attributes[attribute])[len(head) + 1:]
            kind = None
        others = [a for a in vocab.ATTRIBUTES if a != attribute]
        for _attempt in range(1000):
            chosen = rng.sample(others, rng.randint(1, len(others)))
            sentences = [clean_sentence(entity, a, rng.randrange(config.templates_per_attribute))
                         for a in chosen]
            text = " ".join(sentences + [head])
            if not any(doc.startswith(text) for doc in by_entity.get(entity.id, ())):
                break
        else:  # pragma: no cover - needs a degenerate config (one template, few attributes)
            raise RuntimeError(f"could not find a held-out prefix for entity {entity.id}")
        out.append({"text": text, "entity": entity.id, "attribute": attribute,
                    "systematic": kind, "reference": reference})
    return out


def write_jsonl(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Write ``records`` one JSON object per line (sorted keys: byte-identical for equal input)."""
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, sort_keys=True, ensure_ascii=False) + "\n")
