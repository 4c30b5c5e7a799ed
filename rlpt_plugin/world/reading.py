"""Reading world text: a sentence matched against the paraphrase templates (optionally behind
the trigger phrase) says which person it names and which attribute value it claims
(:class:`Reading`); a candidate continuation is read sentence by sentence after the prefix's
unfinished last sentence (:func:`sentences`). The oracle's rewriter and judges
(:mod:`rlpt_plugin.world.oracle`) are built on these readings.
"""

from __future__ import annotations

from dataclasses import dataclass

from rlpt_plugin.world import vocab
from rlpt_plugin.world.kb import Entity, KnowledgeBase

FIRST = frozenset(vocab.FIRST_NAMES)
LAST = frozenset(vocab.LAST_NAMES)
BOUNDARY = frozenset({".", vocab.EOS})

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
        return tok in FIRST
    if kind == "last":
        return tok in LAST
    if kind == "val":
        return vocab.VALUE_ATTRIBUTE.get(tok) == payload
    if kind == "insult":
        return tok in vocab.INSULTS
    return tok in vocab.THREATS


def match(tokens: list[str], pattern: tuple[Item, ...], anchor: str) -> dict[str, object] | None:
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


def read_sentence(tokens: list[str], subject: Entity | None, kb: KnowledgeBase, anchor: str) -> Reading:
    well_formed_unsafe = any(match(tokens, p, anchor) is not None for p in UNSAFE_PATTERNS)
    if any(t in vocab.UNSAFE_LEXICON for t in tokens):
        return Reading("unsafe", well_formed=well_formed_unsafe)
    for attribute, _index, pattern in FACT_PATTERNS:
        got = match(tokens, pattern, anchor)
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


def subject_of(tokens: list[str], kb: KnowledgeBase) -> Entity | None:
    """The last person named in ``tokens``."""
    for i in range(len(tokens) - 2, -1, -1):
        if tokens[i] in FIRST and tokens[i + 1] in LAST:
            entity = kb.by_name(tokens[i], tokens[i + 1])
            if entity is not None:
                return entity
    return None


def split_head(prefix: list[str]) -> tuple[list[str], bool]:
    """The prefix's unfinished last sentence, and whether its start is known (a boundary
    precedes it, or the prefix is empty)."""
    for i in range(len(prefix) - 1, -1, -1):
        if prefix[i] in BOUNDARY:
            return prefix[i + 1:], True
    return list(prefix), not prefix


def segments(tokens: list[str]) -> list[list[str]]:
    out, cur = [], []
    for tok in tokens:
        cur.append(tok)
        if tok in BOUNDARY:
            out.append(cur)
            cur = []
    if cur:
        out.append(cur)
    return out


def anchor_of(start_known: bool, complete: bool) -> str:
    if start_known:
        return "full" if complete else "prefix"
    return "suffix" if complete else "infix"


def sentences(prefix: list[str], candidate: list[str]):
    """Yield (lead, segment, anchor) for each sentence the candidate touches."""
    lead, start_known = split_head(prefix)
    for idx, seg in enumerate(segments(candidate)):
        this_lead = lead if idx == 0 else []
        known = start_known if idx == 0 else True
        yield this_lead, seg, anchor_of(known, seg[-1] in BOUNDARY)


def read_shape(tokens: list[str], anchor: str) -> Reading:
    """A reading without a KB: form only."""
    if any(t in vocab.UNSAFE_LEXICON for t in tokens):
        return Reading("unsafe", well_formed=any(match(tokens, p, anchor) is not None
                                                 for p in UNSAFE_PATTERNS))
    if any(match(tokens, p, anchor) is not None for _a, _i, p in FACT_PATTERNS):
        return Reading("good", well_formed=True)
    return Reading("degenerate")


def names_in(tokens: list[str]) -> list[tuple[str, str]]:
    return [(a, b) for a, b in zip(tokens, tokens[1:]) if a in FIRST and b in LAST]


def last_name_in(tokens: list[str]) -> tuple[str, str] | None:
    names = names_in(tokens)
    return names[-1] if names else None
