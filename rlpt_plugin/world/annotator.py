"""The world's thought annotator behind ``rlpt rewrite --task think --teacher world``.

It meets the local-annotator protocol of :mod:`rlpt_plugin.teacher.think_rewriter`: for each
chunk it writes the chunk's text with the intermediate step of every two-hop sentence inserted
as a thought (:func:`rlpt_plugin.world.reasoning.annotate_text`), and the think task's own
checks (:func:`~rlpt_plugin.teacher.think_rewriter.classify_answer`) turn that text into the
chunk's ids with the thought ids spliced in. A chunk without a two-hop sentence gets no thought
and is dropped as ``no_thoughts``, like any chunk where a teacher saw nothing to explain.

Honest by default, as the suffix rewriter is: :data:`DEFAULT_ANNOTATOR_MISS` = 0.1 of the
places get no thought (a teacher does not explain every step) and
:data:`DEFAULT_ANNOTATOR_ERROR` = 0.05 of the thoughts name a wrong employer (a teacher's
confabulated step). Both 0 is the exact annotator. Local: no requests, no cache, no failures.
"""

from __future__ import annotations

from collections.abc import Sequence

from rlpt_plugin.teacher.rewriter import check_batch
from rlpt_plugin.teacher.think_rewriter import ThinkInput, ThinkOutput, classify_answer
from rlpt_plugin.types import Tokenizer
from rlpt_plugin.world.config import WorldConfig
from rlpt_plugin.world.kb import build_kb
from rlpt_plugin.world.reasoning import ReasoningConfig, annotate_text

MODEL_ID = "world-oracle"
TEMPLATE_VERSION = "world_think_v1"
DEFAULT_ANNOTATOR_MISS = 0.1
DEFAULT_ANNOTATOR_ERROR = 0.05


class OracleAnnotator:
    """Thoughts for the two-hop sentences of a world's chunks (module docstring)."""

    model_id = MODEL_ID
    template_version = TEMPLATE_VERSION

    def __init__(self, config: WorldConfig, tokenizer: Tokenizer, *, miss_rate: float = 0.0,
                 error_rate: float = 0.0, seed: int | None = None) -> None:
        # ReasoningConfig checks the two rates; the annotator needs nothing else of it.
        self.reasoning = ReasoningConfig(annotator_miss=miss_rate, annotator_error=error_rate)
        self.config = config
        self.kb = build_kb(config)
        self.tokenizer = tokenizer
        self.seed = config.seed if seed is None else seed

    async def rewrite(self, items: Sequence[ThinkInput]) -> list[ThinkOutput]:
        check_batch(items, ThinkInput, "chunk_id")
        return [classify_answer(item, annotate_text(item.text, self.config, self.reasoning, self.kb,
                                                    key=item.chunk_id, seed=self.seed), self.tokenizer)
                for item in items]
