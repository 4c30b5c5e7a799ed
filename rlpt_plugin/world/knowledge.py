"""What the TEACHER knows of the world: a share of the knowledge base, not all of it.

A real teacher (a post-trained LLM) knows most of the facts in a pretraining corpus, not every
one of them. :class:`TeacherKnowledge` is the knowledge base as the teacher sees it: every
person and every true value is there, but only a seeded ``share`` of the (person, attribute)
facts is *known*. On a fact it does not know the teacher cannot tell a myth from the truth:

* the judge (``factuality``) trusts the reference, as the paper's factuality prompt does: a
  claim that agrees with the original suffix is fine, one that contradicts it is a definite
  hallucination, one the reference does not settle is a possible hallucination;
* the quality judge does not count it as a false claim;
* the rewriter keeps the corpus's value (a myth stays a myth), and when it must write a value
  it does not know it guesses one (usually wrong, as an LLM's confabulation is).

The known set is a pure function of (world seed, person, attribute): the rewriter and the judge
of one world share it, and it does not depend on the training seed. The exact grader uses the
plain :class:`~rlpt_plugin.world.kb.KnowledgeBase`, which knows everything.
"""

from __future__ import annotations

import hashlib

from rlpt_plugin.world.kb import Entity, KnowledgeBase

#: Default share of the facts the teacher knows. A strong post-trained LLM answers most but
#: not all closed-book questions about entities of its training data correctly (the long tail
#: is where it fails); 0.8 leaves one fact in five to the teacher's trust in the reference.
DEFAULT_KNOWLEDGE = 0.8


def _unit(*parts: object) -> float:
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64


class TeacherKnowledge(KnowledgeBase):
    """``kb`` with only a ``share`` of its facts known (seeded by ``seed``, the world's seed)."""

    def __init__(self, kb: KnowledgeBase, share: float, seed: int) -> None:
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
            raise ValueError(f"knowledge share must be in [0, 1], got {share!r}")
        super().__init__(list(kb.entities), kb.value_sets)
        self.share = float(share)
        self.seed = seed
        self._known = {(e.id, a) for e in kb.entities for a in e.attributes
                       if share >= 1.0 or _unit("rlpt-world-teacher-knows", seed, e.id, a) < share}

    def knows(self, entity_id: int, attribute: str) -> bool:
        return (entity_id, attribute) in self._known

    def belief(self, entity: Entity, attribute: str) -> str:
        """The true value when known, else a seeded guess from the attribute's value set."""
        if self.knows(entity.id, attribute):
            return entity.attributes[attribute]
        values = self.value_sets[attribute]
        return values[int(_unit("rlpt-world-teacher-guess", self.seed, entity.id, attribute) * len(values))]

    def known_share(self) -> float:
        total = sum(len(e.attributes) for e in self.entities)
        return len(self._known) / total if total else 1.0


def teacher_view(kb: KnowledgeBase, share: float, seed: int) -> KnowledgeBase:
    """``kb`` itself when ``share`` is 1 (the exact oracle), else a :class:`TeacherKnowledge`."""
    if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        raise ValueError(f"knowledge share must be in [0, 1], got {share!r}")
    return kb if share >= 1.0 else TeacherKnowledge(kb, share, seed)
