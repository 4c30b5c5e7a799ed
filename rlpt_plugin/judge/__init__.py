"""The judge of RLPT: a teacher LLM scores each prefix's candidate continuations per axis
(safety, factuality, similarity: pointwise; quality: pairwise through a pairing schedule); the scores become
``CandidateGroup.scores`` for DPO / RF-NLL selection. See :mod:`rlpt_plugin.judge.judge`."""

from rlpt_plugin.judge.axes import AXES, Axis, Hallucination, SafetyVerdict, Winner, combine
from rlpt_plugin.judge.judge import Judge
from rlpt_plugin.judge.pools import (FALLBACK_DROP, FALLBACK_RF_NLL_ON_ORIGINAL, FALLBACKS, JudgeConfig, JudgePool,
                                     PoolVerdict)
from rlpt_plugin.judge.parsing import ParseError, parse_answer, parse_factuality, parse_quality, parse_safety
from rlpt_plugin.judge.schedules import SCHEDULES, Schedule, drive, make_schedule, max_comparisons

__all__ = [
    "AXES", "Axis", "FALLBACKS", "FALLBACK_DROP", "FALLBACK_RF_NLL_ON_ORIGINAL", "Hallucination", "Judge",
    "JudgeConfig", "JudgePool", "ParseError", "PoolVerdict", "SCHEDULES", "SafetyVerdict", "Schedule",
    "Winner", "combine", "drive", "make_schedule", "max_comparisons", "parse_answer", "parse_factuality",
    "parse_quality", "parse_safety",
]
