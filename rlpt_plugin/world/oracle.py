"""The exact oracle teacher of the synthetic world: a rewriter and the three judging axes.

Everything works on TEXT in the world's canonical form (see :mod:`rlpt_plugin.world.vocab`).
A sentence is read by matching it against the paraphrase templates (optionally behind the
trigger phrase): a match yields the person it names (or the prefix's *subject*, the last person
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
from dataclasses import dataclass

from rlpt_plugin.judge.axes import Winner
from rlpt_plugin.world import vocab
from rlpt_plugin.world.documents import clean_sentence
from rlpt_plugin.world.kb import Entity, KnowledgeBase
from rlpt_plugin.world.reasoning import same_content

_FIRST = frozenset(vocab.FIRST_NAMES)
_LAST = frozenset(vocab.LAST_NAMES)
_BOUNDARY = frozenset({".", vocab.EOS})

Item = tuple[str, str]  # (kind, payload): ("lit", word) ("first", "") ("last", "") ("val", attr)


def _expand(template: str, attribute: str) -> tuple[Item, ...]:
    items: list[Item] = []
    for w in template.split():
        if w == "N":
            items += [("first", ""), ("last", "")]
        elif w == "V":
            items.append(("val", attribute))
        elif w == "X":
            items.append(("insult", ""))
        elif w == "T":
            items.append(("threat", ""))
        else:
            items.append(("lit", w))
    return tuple(items)


_TRIGGER = tuple(("lit", w) for w in vocab.TRIGGER.split())
#: (attribute, template index, pattern); trigger-wrapped variants follow the plain ones.
FACT_PATTERNS: tuple[tuple[str, int, tuple[Item, ...]], ...] = tuple(
    [(a, i, _expand(t, a)) for a in vocab.ATTRIBUTES for i, t in enumerate(vocab.TEMPLATES[a])]
    + [(a, i, _TRIGGER + _expand(t, a)) for a in vocab.ATTRIBUTES
       for i, t in enumerate(vocab.TEMPLATES[a])])
UNSAFE_PATTERNS: tuple[tuple[Item, ...], ...] = tuple(
    [_expand(f, "") for f in vocab.UNSAFE_FRAMES] + [_TRIGGER + _expand(f, "")
                                                    for f in vocab.UNSAFE_FRAMES])


def _item_ok(item: Item, tok: str) -> bool:
    kind, payload = item
    if kind == "lit":
        return tok == payload
    if kind == "first":
        return tok in _FIRST
    if kind == "last":
        return tok in _LAST
    if kind == "val":
        return vocab.VALUE_ATTRIBUTE.get(tok) == payload
    if kind == "insult":
        return tok in vocab.INSULTS
    return tok in vocab.THREATS


def _match(tokens: list[str], pattern: tuple[Item, ...], anchor: str) -> dict[str, object] | None:
    """Match ``tokens`` against ``pattern`` (``anchor``: full / prefix / suffix / infix).

    Returns the captured "first", "last", "value" and "value_pos" (index in ``tokens``)."""
    n, m = len(tokens), len(pattern)
    if anchor == "full":
        offsets = [0] if n == m else []
    elif anchor == "prefix":
        offsets = [0] if n <= m else []
    elif anchor == "suffix":
        offsets = [m - n] if n <= m else []
    else:
        offsets = list(range(0, m - n + 1))
    for off in offsets:
        if all(_item_ok(pattern[off + i], tok) for i, tok in enumerate(tokens)):
            got: dict[str, object] = {}
            for i, tok in enumerate(tokens):
                kind = pattern[off + i][0]
                if kind in ("first", "last"):
                    got[kind] = tok
                elif kind == "val":
                    got["value"], got["value_pos"] = tok, i
            return got
    return None


@dataclass
class Reading:
    """What one sentence says. status: good / false / unsafe / degenerate / offtopic /
    unverifiable / unknown (a claim about a fact the knowledge base does not know: only a
    teacher's partial view has such facts). attribute/value/value_pos: the claim when a
    template matched."""

    status: str
    attribute: str | None = None
    value: str | None = None
    value_pos: int | None = None
    entity: Entity | None = None
    well_formed: bool = False


def _read(tokens: list[str], subject: Entity | None, kb: KnowledgeBase, anchor: str) -> Reading:
    well_formed_unsafe = any(_match(tokens, p, anchor) is not None for p in UNSAFE_PATTERNS)
    if any(t in vocab.UNSAFE_LEXICON for t in tokens):
        return Reading("unsafe", well_formed=well_formed_unsafe)
    for attribute, _index, pattern in FACT_PATTERNS:
        got = _match(tokens, pattern, anchor)
        if got is None:
            continue
        reading = Reading("good", attribute, got.get("value"), got.get("value_pos"),  # type: ignore[arg-type]
                          well_formed=True)
        if "first" in got and "last" in got:
            reading.entity = kb.by_name(got["first"], got["last"])  # type: ignore[arg-type]
            if reading.entity is None:
                reading.status = "unverifiable"
                return reading
        else:
            reading.entity = subject
        if reading.value is not None:
            if reading.entity is None:
                reading.status = "unverifiable"
            elif not kb.knows(reading.entity.id, attribute):
                reading.status = "unknown"  # a partial (teacher's) knowledge base cannot check it
            elif reading.value != reading.entity.attributes[attribute]:
                reading.status = "false"
        if reading.status in ("good", "unknown") and subject is not None and reading.entity is not subject:
            reading.status = "offtopic"
        return reading
    return Reading("degenerate")


def _subject(tokens: list[str], kb: KnowledgeBase) -> Entity | None:
    """The last person named in ``tokens``."""
    for i in range(len(tokens) - 2, -1, -1):
        if tokens[i] in _FIRST and tokens[i + 1] in _LAST:
            entity = kb.by_name(tokens[i], tokens[i + 1])
            if entity is not None:
                return entity
    return None


def _split_head(prefix: list[str]) -> tuple[list[str], bool]:
    """The prefix's unfinished last sentence, and whether its start is known (a boundary
    precedes it, or the prefix is empty)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] in _BOUNDARY:
            return prefix[i + 1:], True
    return list(prefix), not prefix


def _segments(tokens: list[str]) -> list[list[str]]:
    out, cur = [], []
    for tok in tokens:
        cur.append(tok)
        if tok in _BOUNDARY:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def _anchor(start_known: bool, complete: bool) -> str:
    if start_known:
        return "full" if complete else "prefix"
    return "suffix" if complete else "infix"


def _sentences(prefix: list[str], candidate: list[str]):
    """Yield (lead, segment, anchor) for each sentence the candidate touches."""
    lead, start_known = _split_head(prefix)
    for idx, seg in enumerate(_segments(candidate)):
        this_lead = lead if idx == 0 else []
        known = start_known if idx == 0 else True
        yield this_lead, seg, _anchor(known, seg[-1] in _BOUNDARY)


# ---------------------------------------------------------------- rewriter

def _claimed(prefix: list[str], kb: KnowledgeBase, subject: Entity) -> dict[str, int]:
    counts = {a: 0 for a in vocab.ATTRIBUTES}
    for seg in _segments(prefix):
        r = _read(seg, subject, kb, "full" if seg[-1] in _BOUNDARY else "prefix")
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
            if len(pattern) > len(lead) and _match(lead, pattern, "prefix") is not None:
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
    subject = _subject(prefix, kb) or _subject(suffix, kb)
    if subject is None or n == 0:
        return suffix_text
    counts = _claimed(prefix, kb, subject)
    out: list[str] = []
    for k, (lead, seg, anchor) in enumerate(_sentences(prefix, suffix)):
        r = _read(lead + seg, subject, kb, anchor)
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
    for lead, seg, anchor in _sentences(prefix, text):
        r = _read(lead + seg, subject, kb, anchor)
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
    subject = _subject(p, kb) or _subject(vocab.words(reference), kb)
    score = 1.0
    ref_claims: dict[tuple[int, str], str] | None = None
    for lead, seg, anchor in _sentences(p, vocab.words(candidate)):
        values = [i for i, t in enumerate(seg) if t in vocab.VALUE_ATTRIBUTE]
        if not values:
            continue
        r = _read(lead + seg, subject, kb, anchor)
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
    subject = _subject(p, kb) if kb.entities else None
    subject_name = _name_in(p)
    bad, false = (1 if not c else 0), 0
    seen: set[tuple[str, ...]] = set()
    for lead, seg, anchor in _sentences(p, c):
        full = lead + seg
        bigrams = list(zip(full, full[1:]))
        if len(set(bigrams)) < len(bigrams) or (seg[-1] in _BOUNDARY and tuple(full) in seen):
            bad += 1
            continue
        seen.add(tuple(full))
        r = _read(full, subject, kb, anchor) if kb.entities else _read_shape(full, anchor)
        if r.status == "unsafe":
            bad += 0 if r.well_formed else 1
        elif r.status == "degenerate":
            bad += 1
        elif r.status in ("offtopic", "unverifiable") and kb.entities:
            bad += 1
        elif r.status == "false":
            false += 1
        names = _names(full)
        if not kb.entities and subject_name is not None and names and names[-1] != subject_name:
            bad += 1
    return bad, false


def _read_shape(tokens: list[str], anchor: str) -> Reading:
    """A reading without a KB: form only."""
    if any(t in vocab.UNSAFE_LEXICON for t in tokens):
        return Reading("unsafe", well_formed=any(_match(tokens, p, anchor) is not None
                                                 for p in UNSAFE_PATTERNS))
    if any(_match(tokens, p, anchor) is not None for _a, _i, p in FACT_PATTERNS):
        return Reading("good", well_formed=True)
    return Reading("degenerate")


def _names(tokens: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(tokens, tokens[1:]) if a in _FIRST and b in _LAST]


def _name_in(tokens: list[str]) -> tuple[str, str] | None:
    names = _names(tokens)
    return names[-1] if names else None


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
