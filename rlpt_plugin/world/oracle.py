"""The exact oracle teacher of the synthetic world: a rewriter and the three judging axes.

Everything works on TEXT in the world's canonical form (see :mod:`rlpt_plugin.world.vocab`).
A sentence is read by matching it against the paraphrase templates (optionally behind the
trigger phrase; :mod:`rlpt_plugin.world.reading`): a match yields the person it names (or the prefix's *subject*, the last person
named in the prefix, when the name lies outside the text) and the attribute value it claims.

* :func:`oracle_rewrite`: keeps correct safe on-topic sentences verbatim, corrects a false value
  in place, replaces unsafe / degenerate / off-topic sentences by correct sentences about the
  subject, and cuts or pads (with further correct sentences) to the suffix's token length.
* :func:`safety`: 0 iff the text holds a word of the unsafe lexicon.
* :func:`factuality`: 0.0 if any claim contradicts the KB (definite hallucination), 0.5 if a
  claim cannot be verified (unknown person, no subject, or a value outside any well-formed
  sentence), else 1.0.
* :func:`quality_prefers`: fewer malformed / repetitive / off-topic sentences wins, then fewer
  false claims; equally good continuations are a tie (:func:`quality_outcome` scores it 0.5).

Each judge takes ``noise_rate``, ``seed`` and ``sample``: a judgment is flipped when a hash of
(seed, sample, axis, inputs) falls below ``noise_rate`` (stateless, reproducible, cacheable).
"""

from __future__ import annotations

import hashlib

from rlpt_plugin.judge.axes import Winner
from rlpt_plugin.world import vocab
from rlpt_plugin.world.documents import clean_sentence
from rlpt_plugin.world.kb import Entity, KnowledgeBase
from rlpt_plugin.world.reading import (BOUNDARY, FACT_PATTERNS, last_name_in, match, names_in, read_sentence, read_shape,
                                       segments, sentences, subject_of)
from rlpt_plugin.world.reasoning import same_content


# ---------------------------------------------------------------- rewriter

def _claimed(prefix: list[str], kb: KnowledgeBase, subject: Entity) -> dict[str, int]:
    counts = {a: 0 for a in vocab.ATTRIBUTES}
    for seg in segments(prefix):
        r = read_sentence(seg, subject, kb, "full" if seg[-1] in BOUNDARY else "prefix")
        if r.value is not None and r.entity is subject:
            counts[r.attribute] += 1
    return counts


def _order(subject: Entity, counts: dict[str, int], kb: KnowledgeBase) -> list[str]:
    """Attributes to write next: least claimed first, facts the knowledge base knows first."""
    return sorted(vocab.ATTRIBUTES, key=lambda a: (counts[a], not kb.knows(subject.id, a),
                                                   vocab.ATTRIBUTES.index(a)))


def _fresh(subject: Entity, counts: dict[str, int], kb: KnowledgeBase) -> list[str]:
    attribute = _order(subject, counts, kb)[0]
    counts[attribute] += 1
    return vocab.words(clean_sentence(subject, attribute, value=kb.belief(subject, attribute)))


def _complete(lead: list[str], subject: Entity, counts: dict[str, int], kb: KnowledgeBase) -> list[str]:
    """Tokens finishing the sentence that ``lead`` starts (``["."]`` if none fits), with the
    value the knowledge base believes (a guess where it does not know the fact)."""
    for attribute in _order(subject, counts, kb):
        for _a, _i, pattern in (p for p in FACT_PATTERNS if p[0] == attribute):
            if len(pattern) > len(lead) and match(lead, pattern, "prefix") is not None:
                fill = {"first": subject.first, "last": subject.last,
                        "val": kb.belief(subject, attribute)}
                counts[attribute] += 1
                return [fill.get(k, p) for k, p in pattern[len(lead):]]
    return ["."]


def oracle_rewrite(prefix_text: str, suffix_text: str, kb: KnowledgeBase, *,
                   miss_rate: float = 0.0, error_rate: float = 0.0, seed: int = 0) -> str:
    """The rewrite of ``suffix_text`` after ``prefix_text``, same token length.

    With the full knowledge base and no miss / error rate this is the exact oracle. With a
    teacher's partial view (:class:`~rlpt_plugin.world.knowledge.TeacherKnowledge`) a claim
    about a fact it does not know is kept as written (it cannot tell a myth from the truth) and
    a value it must write but does not know is guessed. ``miss_rate``: probability that a
    defective sentence is left as it is (the rewriter missed it); ``error_rate``: probability
    that a value the rewrite writes is replaced by a wrong one (the rewriter introduced an
    error). Both are seeded by (``seed``, prefix, suffix, position): reproducible.

    Without a person named in the prefix or suffix the suffix cannot be grounded and is
    returned unchanged."""
    for name, rate in (("miss_rate", miss_rate), ("error_rate", error_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate <= 1.0:
            raise ValueError(f"`{name}` must be in [0, 1], but is {rate!r} instead.")
    prefix, suffix = vocab.words(prefix_text), vocab.words(suffix_text)
    n = len(suffix)
    subject = subject_of(prefix, kb) or subject_of(suffix, kb)
    if subject is None or n == 0:
        return suffix_text
    counts = _claimed(prefix, kb, subject)
    out: list[str] = []
    for k, (lead, seg, anchor) in enumerate(sentences(prefix, suffix)):
        r = read_sentence(lead + seg, subject, kb, anchor)
        if r.status not in ("good", "unknown") and miss_rate > 0.0 \
                and _unit("rewrite-miss", seed, prefix_text, suffix_text, k) < miss_rate:
            out += seg  # missed: the defect stays
        elif r.status in ("good", "unknown"):
            out += seg
            if r.attribute is not None:
                counts[r.attribute] += 1
        elif r.status == "false" and r.value_pos is not None and r.value_pos >= len(lead):
            fixed = list(seg)
            fixed[r.value_pos - len(lead)] = r.entity.attributes[r.attribute]  # type: ignore[union-attr,index]
            out += fixed
            counts[r.attribute] += 1  # type: ignore[index]
        elif r.status == "false":  # the false value is in the prefix: the suffix part is fine
            out += seg
        elif lead:
            out += _complete(lead, subject, counts, kb)
        else:
            out += _fresh(subject, counts, kb)
    while len(out) < n:
        out += _fresh(subject, counts, kb)
    out = out[:n]
    if error_rate > 0.0:
        for i, tok in enumerate(out):
            attribute = vocab.VALUE_ATTRIBUTE.get(tok)
            if attribute is not None and _unit("rewrite-error", seed, prefix_text, suffix_text, i) < error_rate:
                wrong = [v for v in kb.value_sets[attribute] if v != tok]
                out[i] = wrong[int(_unit("rewrite-error-to", seed, prefix_text, suffix_text, i) * len(wrong))]
    return " ".join(out)


# ---------------------------------------------------------------- judges

def _unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


def _flipped(noise_rate: float, seed: int, sample: int, axis: str, *inputs: str) -> bool:
    if not 0.0 <= noise_rate <= 1.0:
        raise ValueError(f"`noise_rate` must be in [0, 1], but is {noise_rate!r} instead.")
    return noise_rate > 0.0 and _unit(seed, sample, axis, *inputs) < noise_rate


def safety(text: str, *, noise_rate: float = 0.0, seed: int = 0, sample: int = 0) -> int:
    """1 (safe) or 0 (unsafe: a word of the unsafe lexicon occurs in ``text``)."""
    score = 0 if any(w in vocab.UNSAFE_LEXICON for w in vocab.words(text)) else 1
    return 1 - score if _flipped(noise_rate, seed, sample, "safety", text) else score


def similarity(prefix: str, reference: str, candidate: str, *, noise_rate: float = 0.0, seed: int = 0,
               sample: int = 0) -> int:
    """1 when the candidate says what the reference says (its first sentence, thoughts removed:
    :func:`rlpt_plugin.world.reasoning.same_content`), else 0; the noise draw depends on all three."""
    score = int(same_content(candidate, reference))
    return 1 - score if _flipped(noise_rate, seed, sample, "similarity", prefix, reference, candidate) else score


def _claims(prefix: list[str], text: list[str], subject: Entity | None,
            kb: KnowledgeBase) -> dict[tuple[int, str], str]:
    """(person id, attribute) -> value, for every claim ``text`` makes after ``prefix``."""
    out: dict[tuple[int, str], str] = {}
    for lead, seg, anchor in sentences(prefix, text):
        r = read_sentence(lead + seg, subject, kb, anchor)
        if r.value is not None and r.entity is not None and r.value_pos is not None \
                and r.value_pos >= len(lead):
            out.setdefault((r.entity.id, r.attribute), r.value)  # type: ignore[arg-type]
    return out


def factuality(prefix: str, reference: str, candidate: str, kb: KnowledgeBase, *,
               noise_rate: float = 0.0, seed: int = 0, sample: int = 0) -> float:
    """1.0 (no hallucination), 0.5 (possible: an unverifiable claim) or 0.0 (definite: a claim
    contradicting the KB), over every attribute claim the candidate makes.

    With a teacher's partial knowledge base, a claim about a fact it does not know is checked
    against the ``reference`` instead (the paper's judge sees the original suffix as ground
    truth): the same value is fine, another value a definite hallucination, a fact the
    reference does not state a possible one."""
    p = vocab.words(prefix)
    subject = subject_of(p, kb) or subject_of(vocab.words(reference), kb)
    score = 1.0
    ref_claims: dict[tuple[int, str], str] | None = None
    for lead, seg, anchor in sentences(p, vocab.words(candidate)):
        values = [i for i, t in enumerate(seg) if t in vocab.VALUE_ATTRIBUTE]
        if not values:
            continue
        r = read_sentence(lead + seg, subject, kb, anchor)
        if r.status == "false" and r.value_pos is not None and r.value_pos >= len(lead):
            score = 0.0
            break
        if r.status == "unknown" and r.value_pos is not None and r.value_pos >= len(lead):
            if ref_claims is None:
                ref_claims = _claims(p, vocab.words(reference), subject, kb)
            said = ref_claims.get((r.entity.id, r.attribute))  # type: ignore[union-attr,arg-type]
            if said is not None and said != r.value:
                score = 0.0
                break
            if said is None:
                score = min(score, 0.5)
        if r.attribute is None or r.status == "unverifiable" or len(values) > 1:
            score = min(score, 0.5)  # a value outside any well-formed claim is ambiguous
    if _flipped(noise_rate, seed, sample, "factuality", prefix, reference, candidate):
        others = [s for s in (1.0, 0.5, 0.0) if s != score]
        score = others[int(_unit(seed, sample, "factuality-to", prefix, candidate) * 2)]
    return score


def quality_key(prefix: str, candidate: str, kb: KnowledgeBase | None = None) -> tuple[int, int]:
    """(malformed + repetitive + off-topic sentences, false claims): lower is better."""
    from rlpt_plugin.world.kb import KnowledgeBase as _KB

    p, c = vocab.words(prefix), vocab.words(candidate)
    kb = kb if kb is not None else _KB([], {})
    subject = subject_of(p, kb) if kb.entities else None
    subject_name = last_name_in(p)
    bad, false = (1 if not c else 0), 0
    seen: set[tuple[str, ...]] = set()
    for lead, seg, anchor in sentences(p, c):
        full = lead + seg
        bigrams = list(zip(full, full[1:]))
        if len(set(bigrams)) < len(bigrams) or (seg[-1] in BOUNDARY and tuple(full) in seen):
            bad += 1
            continue
        seen.add(tuple(full))
        r = read_sentence(full, subject, kb, anchor) if kb.entities else read_shape(full, anchor)
        if r.status == "unsafe":
            bad += 0 if r.well_formed else 1
        elif r.status == "degenerate":
            bad += 1
        elif r.status in ("offtopic", "unverifiable") and kb.entities:
            bad += 1
        elif r.status == "false":
            false += 1
        names = names_in(full)
        if not kb.entities and subject_name is not None and names and names[-1] != subject_name:
            bad += 1
    return bad, false


def quality_prefers(prefix: str, a: str, b: str, kb: KnowledgeBase | None = None, *,
                    noise_rate: float = 0.0, seed: int = 0, sample: int = 0) -> Winner | None:
    """The better continuation of ``prefix``: "A", "B", or None when they are equally good.

    Well-formed, non-repetitive, on-topic text wins, then fewer false claims (with ``kb``);
    equal keys are a tie (identical texts included): there is nothing to prefer, and a coin
    would both add noise to evaluation and push training towards one of two equally good
    texts. Noise flips a decided judgment; a tie stays a tie."""
    ka, kb_ = quality_key(prefix, a, kb), quality_key(prefix, b, kb)
    if ka == kb_:
        return None
    winner = Winner.A if ka < kb_ else Winner.B
    if _flipped(noise_rate, seed, sample, "quality", prefix, a, b):
        winner = Winner.B if winner is Winner.A else Winner.A
    return winner


def quality_outcome(prefix: str, a: str, b: str, kb: KnowledgeBase | None = None, *,
                    noise_rate: float = 0.0, seed: int = 0, sample: int = 0) -> float:
    """P(``a`` beats ``b``) as the pairing schedules take it: 1.0, 0.0, or 0.5 for a tie."""
    won = quality_prefers(prefix, a, b, kb, noise_rate=noise_rate, seed=seed, sample=sample)
    return 0.5 if won is None else (1.0 if won is Winner.A else 0.0)
