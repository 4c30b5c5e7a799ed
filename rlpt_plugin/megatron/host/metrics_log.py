"""A Bridge callback that writes every step's reduced metrics to a JSON-lines file.

Bridge's console line drops metrics whose average is <= 0 (a DPO margin, a log-prob); this
file keeps all of them. Written by the rank that holds the loss (last pipeline stage) with
tensor- and data-parallel rank 0, so one line per step. A resumed run first drops the lines of
steps at or after its start (the killed run's steps past its last checkpoint, which it trains
again), so the file holds exactly one line per step.
"""

from __future__ import annotations

import json
from pathlib import Path

from megatron.bridge.training.callbacks import Callback, CallbackContext

from rlpt_plugin.megatron import parallel


class MetricsLog(Callback):
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.records: list[dict[str, float]] = []

    def on_train_start(self, context: CallbackContext) -> None:
        start = int(context.state.train_state.step)
        if not self.path.exists() or not self._writes():
            return
        kept = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line)["step"] < start]
        self.path.write_text("".join(line + "\n" for line in kept))

    def _writes(self) -> bool:
        lay = parallel.layout()
        return lay.tp_rank == 0 and lay.dp_rank == 0 and lay.is_last_stage

    def on_train_step_end(self, context: CallbackContext) -> None:
        lay = parallel.layout()
        if not context.loss_dict or lay.tp_rank != 0 or lay.dp_rank != 0:
            return
        record = {"step": int(context.state.train_state.step)}
        record.update({k: float(v) for k, v in context.loss_dict.items()})
        if context.grad_norm is not None:
            record["grad_norm"] = float(context.grad_norm)
        self.records.append(record)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
