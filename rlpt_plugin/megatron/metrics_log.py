"""A Bridge callback that writes every step's reduced metrics to a JSON-lines file.

Bridge's console line drops metrics whose average is <= 0 (a DPO margin, a log-prob); this
file keeps all of them. Written by the rank that holds the loss (last pipeline stage) with
tensor- and data-parallel rank 0, so one line per step.
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
