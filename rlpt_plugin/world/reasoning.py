"""Reasoning in the world: two-hop facts that the corpus states in two places and never in one.

Every employer of the world is based at a *site* (:data:`~rlpt_plugin.world.vocab.SITES`), which
short company documents state ("veltrix is based in ironport ."). A biography already says
where its person works ("kaven brewick worked for veltrix ."). The *two-hop* sentence joins
the two: "kaven brewick commutes to ironport ." -- the site of the person's employer.

People are split in three, seeded by the world, and documents in two halves by parity of
their index (the halves ``rlpt rewrite --shard 0/2`` and ``--shard 1/2`` read):

* **trained** people (a ``trained_share`` of them): their biographies of the EVEN half carry
  the two-hop sentence, so a next-token model trained on that half can memorise each of them;
* **RL** people (an ``rl_share``): only their biographies of the ODD half do. That half is never
  trained next-token: it is the RL half, whose prefixes RL mid-training cuts before the site, so
  its answers are not memorised and a policy earns its reward by the step;
* **held-out** people: their biographies never do. Their employer is in the corpus and so is
  the employer's site, but "<name> commutes to" has to be *inferred* by a step the corpus text
  never spells out for them: recall the employer, then its site. The evaluation asks exactly
  that (:func:`reasoning_prefixes`).

The thought that makes the step explicit is ``<think> N worked for E . E is based in S .
</think>``, inserted right before the site (:func:`oracle_thought`), so removing the thought
gives the original text back token for token (:func:`strip_thoughts`). :func:`annotate` is the
world's annotator of a whole document: exact with its defaults, imperfect (it misses a share of
the places and writes a wrong intermediate in a few) for an honest teacher, like the rewriter
of :mod:`rlpt_plugin.world.teacher`.

Everything here is a pure function of (:class:`~rlpt_plugin.world.config.WorldConfig`,
:class:`ReasoningConfig`); a world without reasoning is byte-identical to the one before it
existed (:func:`rlpt_plugin.world.documents.generate_corpus` is untouched).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rlpt_plugin.world import vocab
from rlpt_plugin.world.config import WorldConfig
from rlpt_plugin.world.documents import clean_sentence, render
from rlpt_plugin.world.kb import Entity, KnowledgeBase

#: Company sentences ("E" the employer, "S" its site).
COMPANY_TEMPLATES: tuple[str, ...] = ("E is based in S .", "E has its office in S .",
                                      "the office of E is in S .")
#: Two-hop sentences ("N" the person, "S" the site of the person's employer); the words before
#: "S" are the head a held-out prefix ends with. No biography phrase ends the way a head does
#: (an earlier "N goes to work in S ." ended like "N is known for work in V .": models continued
#: it with a field of study).
TWO_HOP_TEMPLATES: tuple[str, ...] = ("N commutes to S .", "N travels to S .")


class ReasoningConfigError(ValueError):
    """A ReasoningConfig with an invalid field."""


@dataclass(frozen=True, kw_only=True)
class ReasoningConfig:
    """The reasoning part of a world (its seed is the world's).

    trained_share: share of people whose even-half biographies carry the two-hop sentence.
    rl_share: share of people whose odd-half (RL half) biographies carry it (the rest are held
        out: the evaluation asks about them only).
    company_docs: company directories: documents that state every employer's site once, in a
        seeded order and phrasing (as long as a biography, so training windows hold them). 80
        (half of them in the trained half): with 20, 2% of the training windows were directories
        and the start model's recall of an employer's site ranged from 17% to 92% over training
        seeds, too little to take the step with.
    eval_size: held-out two-hop prefixes.
    annotator_miss: share of two-hop places the world's annotator leaves without a thought.
    annotator_error: share of thoughts in which it names a wrong employer (and that employer's
        site): the text stays the corpus's, the thought is wrong.
    """

    trained_share: float = 0.4
    rl_share: float = 0.3
    company_docs: int = 80
    eval_size: int = 200
    annotator_miss: float = 0.0
    annotator_error: float = 0.0

    def __post_init__(self) -> None:
        for name in ("trained_share", "rl_share", "annotator_miss", "annotator_error"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ReasoningConfigError(f"`{name}` must be in [0, 1], but is {value!r} instead.")
        if not (0.0 < self.trained_share and self.trained_share + self.rl_share < 1.0):
            raise ReasoningConfigError(f"`trained_share` must be > 0 and `trained_share + rl_share` < 1 (some "
                                       f"people trained on, some held out), but they are {self.trained_share!r} "
                                       f"and {self.rl_share!r}.")
        for name, low in (("company_docs", 1), ("eval_size", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ReasoningConfigError(f"`{name}` must be an int >= {low}, but is {value!r} instead.")


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def employer_sites(config: WorldConfig) -> dict[str, str]:
    """Employer -> its site, for every employer this world draws from."""
    rng = random.Random(f"rlpt-world-sites:{config.seed}")
    return {e: rng.choice(vocab.SITES) for e in config.value_sets()["employer"]}


def people_split(config: WorldConfig, reasoning: ReasoningConfig, kb: KnowledgeBase) -> dict[str, frozenset[int]]:
    """``{"trained", "rl", "held_out"}``: ids of each group of people (module docstring)."""
    rng = random.Random(f"rlpt-world-two-hop:{config.seed}")
    ids = [e.id for e in kb.entities]
    rng.shuffle(ids)
    n_trained = min(len(ids) - 1, max(1, round(reasoning.trained_share * len(ids))))
    n_rl = min(len(ids) - 1 - n_trained, round(reasoning.rl_share * len(ids)))
    return {"trained": frozenset(ids[:n_trained]), "rl": frozenset(ids[n_trained:n_trained + n_rl]),
            "held_out": frozenset(ids[n_trained + n_rl:])}



def two_hop_head(entity: Entity, template_index: int = 0) -> str:
    """The words of a two-hop sentence before its site, name filled in."""
    words = TWO_HOP_TEMPLATES[template_index].split()
    return render(" ".join(words[: words.index("S")]), entity)


def two_hop_sentence(entity: Entity, site: str, template_index: int = 0) -> str:
    return f"{two_hop_head(entity, template_index)} {site} ."


def company_sentence(employer: str, site: str, template_index: int = 0) -> str:
    fill = {"E": employer, "S": site}
    return " ".join(fill.get(w, w) for w in COMPANY_TEMPLATES[template_index].split())


def oracle_thought(entity: Entity, employer: str, site: str) -> str:
    """The intermediate step: the employer (template 0 of its biography sentence), then its site."""
    return (f"{vocab.THINK_OPEN} {clean_sentence(entity, 'employer', 1, employer)} "
            f"{company_sentence(employer, site)} {vocab.THINK_CLOSE}")


def reasoning_corpus(config: WorldConfig, reasoning: ReasoningConfig, kb: KnowledgeBase,
                     corpus: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``corpus`` (the world's biographies) with the two-hop sentence at a seeded place of every
    even-index biography of a trained person and every odd-index one of an RL person, followed by
    the company documents.

    Biographies gain ``"two_hop": {"sentence", "template", "site"}`` (None for held-out people);
    company directories have ``entity`` -1 and ``"companies"``: the employers in their order.
    """
    sites = employer_sites(config)
    split = people_split(config, reasoning, kb)
    rng = random.Random(f"rlpt-world-two-hop-corpus:{config.seed}")
    out: list[dict[str, Any]] = []
    for index, doc in enumerate(corpus):
        doc = dict(doc)
        entity = kb[doc["entity"]]
        doc["two_hop"] = None
        if entity.id in split["trained" if index % 2 == 0 else "rl"]:
            sentences = split_sentences(doc["text"])
            at = rng.randint(0, len(sentences))
            t = rng.randrange(len(TWO_HOP_TEMPLATES))
            site = sites[entity.attributes["employer"]]
            sentences.insert(at, two_hop_sentence(entity, site, t))
            doc["text"] = " ".join(sentences)
            doc["two_hop"] = {"sentence": at, "template": t, "site": site}
        out.append(doc)
    for _ in range(reasoning.company_docs):
        order = list(sites)
        rng.shuffle(order)
        text = " ".join(company_sentence(e, sites[e], rng.randrange(len(COMPANY_TEMPLATES))) for e in order)
        out.append({"id": len(out), "text": text, "entity": -1, "companies": order, "defects": [],
                    "sentences": [], "two_hop": None})
    for i, doc in enumerate(out):
        doc["id"] = i
    return out


def without_two_hop(doc: dict[str, Any]) -> dict[str, Any]:
    """``doc`` (of :func:`reasoning_corpus`) without its two-hop sentence: the world's text before
    the step was written out (a copy; a document without one is returned as a copy unchanged)."""
    doc = dict(doc)
    if doc.get("two_hop") is not None:
        sentences = split_sentences(doc["text"])
        del sentences[doc["two_hop"]["sentence"]]
        doc["text"], doc["two_hop"] = " ".join(sentences), None
    return doc


def split_sentences(text: str) -> list[str]:
    """The sentences of a world text (each ends with " .")."""
    out, current = [], []
    for word in text.split():
        current.append(word)
        if word == ".":
            out.append(" ".join(current))
            current = []
    if current:
        out.append(" ".join(current))
    return out


def annotate(doc: dict[str, Any], config: WorldConfig, reasoning: ReasoningConfig,
             kb: KnowledgeBase, *, seed: int | None = None) -> str:
    """:func:`annotate_text` of a corpus document (its draws keyed by the document's id)."""
    return annotate_text(doc["text"], config, reasoning, kb, key=str(doc["id"]), seed=seed)


def _two_hop_tails() -> list[list[str]]:
    """The words of each two-hop template between the name and the site."""
    tails = []
    for template in TWO_HOP_TEMPLATES:
        words = template.split()
        tails.append(words[1: words.index("S")])
    return tails


def annotate_text(text: str, config: WorldConfig, reasoning: ReasoningConfig, kb: KnowledgeBase, *,
                  key: str = "", seed: int | None = None) -> str:
    """``text`` with a thought right before the site of every two-hop sentence in it.

    The annotator reads the text only, as an LLM teacher would: a person's name followed by a
    two-hop head and a site. With ``annotator_miss`` a seeded share of those places get no
    thought; with ``annotator_error`` a seeded share of thoughts name another employer (and its
    site). Draws are keyed by (``seed``, default the world's; ``key``, e.g. the chunk's id; the
    place's word index), so the same chunk is always annotated the same way."""
    seed = config.seed if seed is None else seed
    sites = employer_sites(config)
    words = text.split()
    out: list[str] = []
    i = 0
    tails = _two_hop_tails()
    while i < len(words):
        entity = kb.by_name(words[i], words[i + 1]) if i + 1 < len(words) else None
        tail = next((t for t in tails if entity is not None and words[i + 2: i + 2 + len(t)] == t), None)
        at = i + 2 + len(tail) if tail is not None else -1
        if tail is None or at >= len(words) or words[at] not in vocab.SITES:
            out.append(words[i])
            i += 1
            continue
        out.extend(words[i:at])
        if _unit("rlpt-world-annotator-miss", seed, key, at) >= reasoning.annotator_miss:
            employer = entity.attributes["employer"]
            if _unit("rlpt-world-annotator-error", seed, key, at) < reasoning.annotator_error:
                others = [e for e in sites if e != employer]
                employer = others[int(_unit("rlpt-world-annotator-wrong", seed, key, at) * len(others))]
            out.append(oracle_thought(entity, employer, sites[employer]))
        i = at
    return " ".join(out)


def strip_thoughts(text: str) -> str:
    """``text`` without its ``<think> ... </think>`` spans (and the space before each)."""
    out, depth = [], 0
    for word in text.split():
        if word == vocab.THINK_OPEN:
            depth += 1
        elif word == vocab.THINK_CLOSE and depth:
            depth -= 1
        elif not depth:
            out.append(word)
    return " ".join(out)


def thought_of(text: str) -> str | None:
    """The words inside the first complete thought of ``text``, or None."""
    words = text.split()
    if vocab.THINK_OPEN not in words:
        return None
    start = words.index(vocab.THINK_OPEN) + 1
    if vocab.THINK_CLOSE not in words[start:]:
        return None
    return " ".join(words[start: words.index(vocab.THINK_CLOSE, start)])


def reasoning_prefixes(config: WorldConfig, reasoning: ReasoningConfig,
                       kb: KnowledgeBase) -> list[dict[str, Any]]:
    """Held-out two-hop prefixes: ``{"text", "entity", "employer", "template", "site",
    "reference"}``.

    Each is one to four clean sentences of a fresh biography of a HELD-OUT person, never about
    their employer (the step must be recalled, not read), followed by the head of a two-hop
    sentence; ``reference`` is the rest of that sentence ("<site> ."). No training document
    holds a two-hop sentence of a held-out person, so no prefix is a prefix of one.
    """
    sites = employer_sites(config)
    held_out = [kb[i] for i in sorted(people_split(config, reasoning, kb)["held_out"])]
    rng = random.Random(f"rlpt-world-two-hop-eval:{config.seed}")
    others = [a for a in vocab.ATTRIBUTES if a != "employer"]
    out = []
    for _ in range(reasoning.eval_size):
        entity = held_out[rng.randrange(len(held_out))]
        t = rng.randrange(len(TWO_HOP_TEMPLATES))
        chosen = rng.sample(others, rng.randint(1, len(others)))
        sentences = [clean_sentence(entity, a, rng.randrange(config.templates_per_attribute))
                     for a in chosen]
        site = sites[entity.attributes["employer"]]
        out.append({"text": " ".join(sentences + [two_hop_head(entity, t)]), "entity": entity.id,
                    "employer": entity.attributes["employer"], "template": t, "site": site,
                    "reference": f"{site} ."})
    return out


def recall_probes(config: WorldConfig, reasoning: ReasoningConfig, kb: KnowledgeBase) -> list[dict[str, Any]]:
    """The two one-hop facts a two-hop answer needs, asked directly: ``{"text", "kind",
    "answer", "reference"}`` with kind ``employer`` ("<name> worked for", each held-out person)
    or ``site`` ("<employer> is based in", each employer). A model that cannot recall these
    cannot take the step, thought or no thought."""
    out = []
    for entity_id in sorted(people_split(config, reasoning, kb)["held_out"]):
        entity = kb[entity_id]
        employer = entity.attributes["employer"]
        head = clean_sentence(entity, "employer", 1)[: -len(f" {employer} .")]
        out.append({"text": head, "kind": "employer", "answer": employer, "reference": f"{employer} ."})
    for employer, site in employer_sites(config).items():
        out.append({"text": company_sentence(employer, site)[: -len(f" {site} .")], "kind": "site",
                    "answer": site, "reference": f"{site} ."})
    return out


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` after its thoughts are removed ("" when there is none)."""
    sentences = split_sentences(strip_thoughts(text))
    return sentences[0] if sentences else ""


def same_content(candidate: str, reference: str) -> bool:
    """The world's exact similarity judge: the candidate's first sentence, thoughts removed, is
    the reference's first sentence (the RLMT reward: 1 = same content)."""
    return first_sentence(candidate) == first_sentence(reference) != ""


def score_reasoning(item: dict[str, Any], continuation: str, config: WorldConfig) -> dict[str, float]:
    """One held-out prefix's continuation, graded exactly.

    ``correct``: the first word after the thoughts is the right site. ``thought``: the
    continuation opens with a complete thought; ``thought_correct``: that thought names the
    person's true employer and its site; ``thought_tokens``: words inside the thought.
    """
    words = strip_thoughts(continuation).split()
    thought = thought_of(continuation) if continuation.split()[:1] == [vocab.THINK_OPEN] else None
    correct = bool(words) and words[0] == item["site"]
    thought_correct = False
    if thought is not None:
        sites = employer_sites(config)
        said = [w for w in thought.split() if w in sites]
        thought_correct = bool(said) and said[0] == item["employer"] and item["site"] in thought.split()
    return {"correct": float(correct), "thought": float(thought is not None),
            "thought_correct": float(thought_correct),
            "thought_tokens": float(len(thought.split()) if thought is not None else 0)}
