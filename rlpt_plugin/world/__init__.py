"""The synthetic world: a seeded knowledge base, a closed vocabulary, a raw biography corpus
with controlled (and partly systematic) false / unsafe / degenerate defects, held-out eval
prefixes, and an exact oracle teacher (rewriter + safety / factuality / quality judges).

See docs/WORLD.md. Importing this package registers the world's tokenizer under the name
"world" (``rlpt_plugin.data.tokenizer.load_tokenizer("world")``).
"""

from __future__ import annotations

from rlpt_plugin.data.tokenizer import register_tokenizer, registered_tokenizers
from rlpt_plugin.world.config import WorldConfig, WorldConfigError
from rlpt_plugin.world.documents import (eval_prefixes, generate_corpus, systematic_contexts,
                                         write_jsonl)
from rlpt_plugin.world.kb import Entity, KnowledgeBase, build_kb
from rlpt_plugin.world.knowledge import TeacherKnowledge, teacher_view
from rlpt_plugin.world.oracle import factuality, oracle_rewrite, quality_outcome, quality_prefers, safety
from rlpt_plugin.world.vocab import WorldTokenizer

if "world" not in registered_tokenizers():
    register_tokenizer("world", WorldTokenizer)
if "world-reasoning" not in registered_tokenizers():
    register_tokenizer("world-reasoning", lambda: WorldTokenizer(reasoning=True))

__all__ = [
    "Entity", "KnowledgeBase", "WorldConfig", "WorldConfigError", "WorldTokenizer", "build_kb",
    "TeacherKnowledge", "eval_prefixes", "factuality", "generate_corpus", "oracle_rewrite",
    "quality_outcome", "quality_prefers", "safety", "systematic_contexts", "teacher_view", "write_jsonl",
]
