"""The seeded knowledge base: people with a handful of attributes each (the world's truth)."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

from rlpt_plugin.world import vocab
from rlpt_plugin.world.config import WorldConfig


@dataclass(frozen=True)
class Entity:
    """One person: ``id`` (index in the KB), a unique name, and attribute -> value."""

    id: int
    first: str
    last: str
    attributes: dict[str, str]

    @property
    def name(self) -> str:
        return f"{self.first} {self.last}"


class KnowledgeBase:
    """Entities of a world plus lookups by id and by (first, last) name."""

    def __init__(self, entities: list[Entity], value_sets: dict[str, tuple[str, ...]]) -> None:
        self.entities: tuple[Entity, ...] = tuple(entities)
        self.value_sets = dict(value_sets)
        self._by_name: dict[tuple[str, str], Entity] = {(e.first, e.last): e for e in entities}

    def __len__(self) -> int:
        return len(self.entities)

    def __getitem__(self, entity_id: int) -> Entity:
        return self.entities[entity_id]

    def by_name(self, first: str, last: str) -> Entity | None:
        return self._by_name.get((first, last))

    def value(self, entity_id: int, attribute: str) -> str:
        return self.entities[entity_id].attributes[attribute]

    def knows(self, entity_id: int, attribute: str) -> bool:
        """Whether this knowledge base can check the fact (always: this is the truth; the
        teacher's partial view, :class:`~rlpt_plugin.world.knowledge.TeacherKnowledge`, is not)."""
        return True

    def belief(self, entity: Entity, attribute: str) -> str:
        """The value this knowledge base holds for the fact (the true one)."""
        return entity.attributes[attribute]


def build_kb(config: WorldConfig) -> KnowledgeBase:
    """The knowledge base of ``config`` (a pure function of the config)."""
    rng = random.Random(f"rlpt-world-kb:{config.seed}")
    pairs = list(itertools.product(vocab.FIRST_NAMES, vocab.LAST_NAMES))
    names = rng.sample(pairs, config.num_entities)
    value_sets = config.value_sets()
    entities = []
    for i, (first, last) in enumerate(names):
        attrs = {a: rng.choice(value_sets[a]) for a in vocab.ATTRIBUTES}
        entities.append(Entity(i, first, last, attrs))
    return KnowledgeBase(entities, value_sets)
