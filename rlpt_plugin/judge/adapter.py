"""The teacher judge (:class:`~rlpt_plugin.judge.judge.Judge`) as the in-loop stage's pool judge:
verdicts with plain string axes and the batch's failed attempts by reason."""

from __future__ import annotations

from collections.abc import Sequence

from rlpt_plugin.judge.judge import Judge
from rlpt_plugin.judge.pools import FAILURE_REASONS, JudgePool, Verdicts


def _axis_name(axis: object) -> str:
    return str(axis.value if hasattr(axis, "value") else axis)


class JudgeAdapter:
    """Adapts :class:`Judge` to the stage's protocol (``judge(pools) -> Verdicts``, ``aclose()``)."""

    def __init__(self, judge: Judge):
        self.inner = judge
        self.axes = tuple(_axis_name(a) for a in judge.config.axes)

    async def judge(self, pools: Sequence[JudgePool]) -> Verdicts:
        out = await self.inner.judge(pools)
        per_axis = [{_axis_name(a): list(v) for a, v in p.per_axis.items()} for p in out]
        return Verdicts(scores=[p.scores for p in out], per_axis=per_axis, calls=[p.calls for p in out],
                        failures=[p.failures for p in out], errors=[p.errors for p in out],
                        cache_hit_rate=self.inner.metrics()["cache_hit_rate"],
                        reasons={k: float(sum(p.reasons.get(k, 0) for p in out)) for k in FAILURE_REASONS})

    async def aclose(self) -> None:
        """The HTTP client (on the loop it ran on), then the verdict cache."""
        try:
            await self.inner.aclose()
        finally:
            if self.inner.cache is not None:
                self.inner.cache.close()
