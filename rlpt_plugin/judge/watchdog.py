"""Stops a run whose judge has stopped judging, instead of letting it train on without it.

A pool whose every retry failed is left out of the RL terms (``unjudged``). A few of those are
a transient outage the retries and failover did not absorb; a judge whose answers never parse,
or a service that is gone, makes every pool unjudged, and the run would go on as slow
next-token training. :class:`UnjudgedWatchdog` sees each step's unjudged and total pool counts
(summed over all data-parallel ranks, so every rank decides alike) and trips when the share over
the last ``window`` steps exceeds ``max_share``. Pure Python: tested without processes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence


class UnjudgedWatchdog:
    def __init__(self, *, max_share: float, window: int):
        if not 0.0 <= max_share <= 1.0:
            raise ValueError(f"max_share must be in [0, 1], but is {max_share!r} instead.")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1, but is {window!r} instead.")
        self.max_share, self.window = max_share, window
        self._steps: deque[tuple[float, float]] = deque(maxlen=window)

    def observe(self, unjudged: float, pools: float) -> float | None:
        """Record one step; the unjudged share of the window when it trips, else None. It trips
        only on a full window, so the first ``window - 1`` steps of a run (or of a resumed run)
        never stop it, and never when ``max_share`` is 1."""
        if unjudged < 0 or pools < unjudged:
            raise ValueError(f"unjudged ({unjudged}) must be in [0, pools ({pools})]")
        self._steps.append((float(unjudged), float(pools)))
        if len(self._steps) < self.window or self.max_share >= 1.0:
            return None
        total = sum(p for _, p in self._steps)
        share = sum(u for u, _ in self._steps) / total if total else 0.0
        return share if share > self.max_share else None


def stop_message(share: float, watchdog: UnjudgedWatchdog, step: int, examples: Sequence[str]) -> str:
    """Why the run stops, with the judge's latest failure reasons (answers included)."""
    lines = [f"the judge could not judge {share:.0%} of the pools of steps {step - watchdog.window + 1}.."
             f"{step} (limit rlpt.judge.max_unjudged_share={watchdog.max_share:g} over "
             f"rlpt.judge.unjudged_window={watchdog.window} steps): the run would go on as plain "
             "next-token training. Latest failure reasons:"]
    lines += [f"  - {e}" for e in examples] or ["  (none recorded on this rank)"]
    lines.append("Check the judge's endpoints, model and prompts (a parse failure shows the answer "
                 "above), or raise rlpt.judge.max_unjudged_share to tolerate it.")
    return "\n".join(lines)
