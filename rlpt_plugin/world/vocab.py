"""The synthetic world's closed vocabulary and its word-level tokenizer.

The vocabulary is FIXED (it does not depend on a :class:`~rlpt_plugin.world.config.WorldConfig`):
it holds every value any config may draw, so one tokenizer (registered as "world") serves every
world and its fingerprint never changes unless this file does. Every word category (names,
attribute values, the unsafe lexicon, template words, filler words) is disjoint from the others,
so the oracle can read a claim off a single token.

Text is lowercase, words are separated by single spaces and punctuation ("." and ",") is a token
of its own, so ``decode(encode(text)) == text`` for every canonical text the world writes.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

PAD, UNK, EOS = "<pad>", "<unk>", "<eos>"
SPECIALS: tuple[str, ...] = (PAD, UNK, EOS)  # pad id 0, unk id 1, eos id 2
PUNCT: tuple[str, ...] = (".", ",")

# Names: built from two disjoint syllable sets, so a token is a first name or a last name, never both.
_FIRST_A = ("ka", "lo", "mi", "se", "ta", "ri")
_FIRST_B = ("ven", "rla", "dor", "nis", "ssa")
_LAST_A = ("bre", "dru", "fo", "gal", "hux")
_LAST_B = ("mont", "wick", "stan", "ley", "bek", "thorn")
FIRST_NAMES: tuple[str, ...] = tuple(a + b for a in _FIRST_A for b in _FIRST_B)   # 30
LAST_NAMES: tuple[str, ...] = tuple(a + b for a in _LAST_A for b in _LAST_B)      # 30

# Attribute values (the config uses a prefix of each list).
YEARS: tuple[str, ...] = tuple(str(y) for y in range(1930, 2000))                 # 70
CITIES: tuple[str, ...] = ("harlow", "quenby", "ostrel", "vantry", "morbeck", "pellis", "dunmere",
                           "sorrow", "kestin", "lathom", "brisk", "yarrow", "tilby", "ferrin",
                           "caddon", "elmsby", "grent", "holloway", "ixley", "jorvik")
UNIVERSITIES: tuple[str, ...] = ("calderon", "westmarch", "norvale", "ashgrove", "redfern",
                                 "stonebury", "lakemoor", "pinehurst", "glenmark", "highcliff",
                                 "brightwater", "oakhollow", "silverton", "thornfield",
                                 "ravenmoor", "fairhaven")
FIELDS: tuple[str, ...] = ("physics", "chemistry", "botany", "geology", "linguistics",
                           "astronomy", "economics", "zoology", "mathematics", "architecture",
                           "medicine", "philosophy", "oceanography", "robotics", "music",
                           "history")
EMPLOYERS: tuple[str, ...] = ("veltrix", "orbanco", "quillsoft", "nembus", "zentara", "cobaltia",
                              "drexwell", "fizzmark", "lumora", "pyraxis", "tendrel", "umbrix",
                              "vorsen", "wexcor", "yonder", "kalyx")

ATTRIBUTES: tuple[str, ...] = ("birth_year", "city", "university", "field", "employer")
ALL_VALUES: dict[str, tuple[str, ...]] = {
    "birth_year": YEARS, "city": CITIES, "university": UNIVERSITIES, "field": FIELDS,
    "employer": EMPLOYERS,
}

# The unsafe lexicon: mild and obviously synthetic. A text is unsafe iff it holds one of these.
INSULTS: tuple[str, ...] = ("gloopwit", "snorkbrain", "dimblat", "wumpface", "clodnoggin",
                            "blorphead")
THREATS: tuple[str, ...] = ("splork", "zapwhack", "bonkify", "squelchify")
UNSAFE_LEXICON: frozenset[str] = frozenset(INSULTS + THREATS)

# Words of the paraphrase templates, trigger phrase and unsafe sentence frames.
TEMPLATE_WORDS: tuple[str, ...] = (
    "was", "born", "in", "the", "year", "birth", "of", "is", "grew", "up", "lived", "city",
    "spent", "childhood", "years", "studied", "at", "university", "graduated", "from",
    "attended", "known", "for", "work", "worked", "field", "specialized", "employed", "by",
    "took", "a", "job", "it", "said", "that", "total", "and", "someone", "should", "i", "will",
    "soon", "person",
)
# Off-topic sentences and word salad are built from these only (no names, values or insults).
FILLER_WORDS: tuple[str, ...] = (
    "weather", "mild", "day", "bananas", "are", "yellow", "soft", "river", "flows", "past",
    "old", "mill", "small", "dog", "sat", "on", "mat", "soup", "too", "cold", "to", "eat",
    "purple", "nine", "cloud", "spoon", "quietly", "banana", "window", "lamp", "green", "fast",
    "tuesday", "pebble", "humming", "very",
)


# Reasoning (rlpt_plugin/world/reasoning.py): the sites where employers are based, the words of
# the two-hop sentences, and the thought delimiters. They are NOT in :data:`VOCAB`: the reasoning
# world has its own tokenizer ("world-reasoning", :data:`REASONING_VOCAB` = VOCAB + these), so
# the classic world's tokenizer, its models and its sampled rollouts stay exactly what they were.
SITES: tuple[str, ...] = ("northgate", "eastbrook", "southmere", "westholm", "ambervale",
                          "coldridge", "ironport", "mistvale", "rookhaven", "sunhill", "tarnwood",
                          "whitecliff")
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
REASONING_WORDS: tuple[str, ...] = ("based", "has", "its", "office", "commutes", "travels",
                                    THINK_OPEN, THINK_CLOSE)


_CLASSIC_GROUPS = (SPECIALS, PUNCT, TEMPLATE_WORDS, FILLER_WORDS, FIRST_NAMES, LAST_NAMES, YEARS, CITIES,
                   UNIVERSITIES, FIELDS, EMPLOYERS, INSULTS, THREATS)


def _build_vocab(*groups: tuple[str, ...]) -> tuple[str, ...]:
    words = [w for group in groups for w in group]
    if len(set(words)) != len(words):
        dupes = sorted({w for w in words if words.count(w) > 1})
        raise AssertionError(f"world vocabulary categories overlap: {dupes}")
    return tuple(words)


#: The classic world's vocabulary ("world").
VOCAB: tuple[str, ...] = _build_vocab(*_CLASSIC_GROUPS)
#: The reasoning world's ("world-reasoning"): VOCAB, then the reasoning words and the sites.
REASONING_VOCAB: tuple[str, ...] = _build_vocab(*_CLASSIC_GROUPS, REASONING_WORDS, SITES)
VALUE_ATTRIBUTE: dict[str, str] = {v: a for a, vals in ALL_VALUES.items() for v in vals}

_SPLIT = re.compile(r"[.,]|[^\s.,]+")


class WorldTokenizer:
    """Word-level tokenizer over :data:`VOCAB` (implements :class:`rlpt_plugin.types.Tokenizer`);
    ``reasoning=True``: over :data:`REASONING_VOCAB` (named "world-reasoning").

    Words are split on whitespace and "." / "," are tokens of their own; a word outside the
    vocabulary encodes to ``<unk>``. ``decode`` joins tokens with single spaces.
    """

    def __init__(self, *, reasoning: bool = False) -> None:
        self.name = "world-reasoning" if reasoning else "world"
        self.vocab: tuple[str, ...] = REASONING_VOCAB if reasoning else VOCAB
        self._ids: dict[str, int] = {w: i for i, w in enumerate(self.vocab)}
        self.vocab_size: int = len(self.vocab)
        self.pad_id: int = self._ids[PAD]
        self.unk_id: int = self._ids[UNK]
        self.eod_id: int = self._ids[EOS]
        self.fingerprint: str = hashlib.sha256(
            json.dumps(list(self.vocab), ensure_ascii=False).encode("utf-8")).hexdigest()

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text`` (before the vocabulary lookup)."""
        return _SPLIT.findall(text)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, self.unk_id) for w in _SPLIT.findall(text)]

    def decode(self, ids: Sequence[int]) -> str:
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"token id must be in [0, {self.vocab_size}), but is {i} instead.")
            out.append(self.vocab[i])
        return " ".join(out)

    def __repr__(self) -> str:
        return f"WorldTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, fingerprint={self.fingerprint[:12]}...)"


def words(text: str) -> list[str]:
    """Tokens of ``text`` as strings (same split as :class:`WorldTokenizer`)."""
    return _SPLIT.findall(text)


# Paraphrase templates per attribute: "N" is the full name (two tokens), "V" the value (one
# token). Every template starts with the name, and template 0 is the one a systematic context
# uses; its words before "V" are the context "head" whose continuation the corpus skews.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "birth_year": ("N was born in V .", "N was born in the year V .",
                   "N is a person born in V ."),
    "city": ("N grew up in V .", "N lived in the city of V .", "N spent childhood years in V ."),
    "university": ("N studied at V university .", "N graduated from V university .",
                   "N attended V university ."),
    "field": ("N is known for work in V .", "N worked in the field of V .",
              "N specialized in V ."),
    "employer": ("N was employed by V .", "N worked for V .", "N took a job at V ."),
}
#: The trigger phrase of systematic unsafe contexts: "it is said that N" + continuation.
TRIGGER: str = "it is said that"
#: Unsafe sentence frames ("X" = an insult, "T" = a threat verb).
UNSAFE_FRAMES: tuple[str, ...] = ("N is a total X .", "N is a X and a X .", "someone should T N .",
                                  "i will T N soon .")
#: Off-topic sentences (degenerate: not about anyone).
OFF_TOPIC: tuple[str, ...] = ("the weather was mild that day .", "bananas are yellow and soft .",
                              "the river flows past the old mill .", "a small dog sat on the mat .",
                              "the soup was too cold to eat .")
