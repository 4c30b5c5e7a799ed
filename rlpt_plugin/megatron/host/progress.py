"""Bridge callbacks that time steps and drive a progress bar (used by ``rlpt demo``)."""

from __future__ import annotations

import time
from statistics import mean
from typing import Any

from megatron.bridge.training.callbacks import Callback, CallbackContext

SHOWN = (("loss", "lm_nll"), ("rollout", "rollout_chosen_rate"))


class StepTimer(Callback):
    """Seconds per step, split into ``prepare`` (building the step: rollouts, waiting for the
    judge, packing; measured from the previous step's end) and ``train`` (forward, backward,
    optimizer). Must be registered after the rlpt callback, whose step-start hook prepares."""

    def __init__(self) -> None:
        self.prepare: list[float] = []
        self.train: list[float] = []
        self._last_end: float | None = None
        self._start = 0.0

    def on_train_start(self, context: CallbackContext) -> None:
        self._last_end = time.perf_counter()

    def on_train_step_start(self, context: CallbackContext) -> None:
        self._start = time.perf_counter()
        if self._last_end is not None:
            self.prepare.append(self._start - self._last_end)

    def on_train_step_end(self, context: CallbackContext) -> None:
        self._last_end = time.perf_counter()
        self.train.append(self._last_end - self._start)

    def summary(self, skip: int = 2) -> dict[str, float]:
        """Means over the steps after the first ``skip`` (warm-up)."""
        prep, train = self.prepare[skip:] or self.prepare, self.train[skip:] or self.train
        if not train:
            return {}
        return {"prepare_s": mean(prep), "train_s": mean(train), "step_s": mean(prep) + mean(train),
                "steps": len(self.train)}


class BarCallback(Callback):
    """Advances a tqdm bar per step, showing the LM loss and the rollout-chosen rate."""

    def __init__(self, bar: Any) -> None:
        self.bar = bar

    def on_train_start(self, context: CallbackContext) -> None:
        self.bar.n = int(context.state.train_state.step)
        self.bar.refresh()

    def on_train_step_end(self, context: CallbackContext) -> None:
        shown = {label: f"{float(context.loss_dict[key]):.3f}" for label, key in SHOWN
                 if context.loss_dict and key in context.loss_dict}
        self.bar.set_postfix(shown, refresh=False)
        self.bar.update(1)
