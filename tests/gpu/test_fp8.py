"""FP8 training steps of a small Transformer Engine model through the plugin's host.

The paper recipe (rlpt_plugin/recipes/paper.py) shrunk to 4 layers of h256 trains 12 steps of
the next-token term on the deterministic synthetic groups (learnable, no judge needed), once in
bf16 and once per FP8 recipe of Bridge (per-tensor current scaling, delayed scaling, and MXFP8
on Blackwell). Each FP8 run must (a) really run FP8: the model is built from Transformer Engine
modules and its config carries the FP8 recipe, and (b) track the bf16 run: the loss at every
step within 5% (relative) of bf16's, while both learn (the loss falls by more than 1 nat).
With 4 layers, the current-scaling recipe keeps the first and last layer in bf16 and runs the
middle two in FP8.

Needs CUDA, Transformer Engine and FP8 tensor cores (compute capability >= 8.9); skipped
otherwise (the suite-wide hook in tests/conftest.py skips ``gpu`` tests without CUDA; the
checks below also cover a CUDA machine without TE or with an older GPU). The runs share one
spawned process, which initialises NCCL itself through ``launch.train``.
"""

from __future__ import annotations

import importlib.util
import math
import traceback
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp


def _capability() -> tuple[int, int]:
    return torch.cuda.get_device_capability() if torch.cuda.is_available() else (0, 0)


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.skipif(importlib.util.find_spec("transformer_engine") is None,
                       reason="needs Transformer Engine"),
    pytest.mark.skipif(_capability() < (8, 9), reason="FP8 needs compute capability >= 8.9 (Ada/Hopper)"),
]

RECIPE = "rlpt_plugin.recipes.paper:paper_quality"
STEPS = 12
TOLERANCE = 0.05  # per-step |loss_fp8 - loss_bf16| / loss_bf16
SMALL = [
    "model.num_layers=4", "model.hidden_size=256", "model.ffn_hidden_size=704",  # FP8 GEMMs: multiples of 16
    "model.num_attention_heads=4", "model.seq_length=64", "model.vocab_size=128", "tokenizer.vocab_size=128",
    # next-token training on the synthetic groups: no store, no judge
    "rlpt.data.source=synthetic", "rlpt.loss.dpo.start=0", "rlpt.loss.lm.start=1", "rlpt.data.lm_on_window=true",
    "rlpt.data.groups_per_step=32", "train.micro_batch_size=8", "train.global_batch_size=32",
    f"train.train_iters={STEPS}", "optimizer.lr=3e-3", "optimizer.min_lr=3e-4", "scheduler.lr_warmup_iters=0",
    "checkpoint.save=null", "checkpoint.load=null", "checkpoint.pretrained_checkpoint=null",
]
FP8 = {  # Bridge mixed-precision recipe -> the model's fp8_recipe it must produce
    "bf16_with_fp8_current_scaling_mixed": "tensorwise",
    "bf16_with_fp8_delayed_scaling_mixed": "delayed",
    "bf16_with_mxfp8_mixed": "mxfp8",
}


def _runs(root: str, precisions: list[str]) -> dict[str, dict[str, Any]]:
    """In the spawned process: one pretrain() per precision; the loss per step and what the
    built model really is."""
    from rlpt_plugin.megatron.host import launch
    from megatron.bridge.training.callbacks import Callback
    from megatron.core.utils import get_model_config
    from transformer_engine.pytorch.module.base import TransformerEngineBaseModule

    class Probe(Callback):
        def __init__(self) -> None:
            self.seen: dict[str, Any] = {}

        def on_train_start(self, context: Any) -> None:
            config = get_model_config(context.model[0])
            self.seen = {"fp8": config.fp8, "fp8_recipe": config.fp8_recipe, "bf16": config.bf16,
                         "te_modules": sum(isinstance(m, TransformerEngineBaseModule)
                                           for chunk in context.model for m in chunk.modules())}

    out = {}
    for precision in precisions:
        probe = Probe()
        records = launch.train(RECIPE, Path(root) / precision, [*SMALL, f"mixed_precision={precision}"],
                               extra_callbacks=[probe])
        out[precision] = {"records": records, **probe.seen}
    return out


def _worker(root: str, precisions: list[str]) -> None:
    try:
        result = {"ok": True, "value": _runs(root, precisions)}
    except BaseException:  # noqa: BLE001 - reported to the parent verbatim
        result = {"ok": False, "error": traceback.format_exc()}
    torch.save(result, Path(root) / "result.pt")


def _spawn(root: Path, precisions: list[str]) -> dict[str, dict[str, Any]]:
    """Bridge mutates process state and initialises CUDA/NCCL: run it in a fresh process."""
    root.mkdir(parents=True, exist_ok=True)
    proc = mp.get_context("spawn").Process(target=_worker, args=(str(root), precisions))
    proc.start()
    proc.join(timeout=900)
    if proc.is_alive():
        proc.kill()
        raise AssertionError("the FP8 runs did not finish in 900 s")
    result = torch.load(root / "result.pt", weights_only=False)
    if not result["ok"]:
        raise AssertionError("FP8 worker failed:\n" + result["error"])
    return result["value"]


def _precisions() -> list[str]:
    wanted = [p for p in FP8 if p != "bf16_with_mxfp8_mixed" or _capability() >= (10, 0)]
    return ["bf16_mixed", *wanted]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """All runs in one process (one Bridge start-up): bf16 and every FP8 recipe this GPU has."""
    return _spawn(tmp_path_factory.mktemp("fp8"), _precisions())


@pytest.mark.parametrize("fp8", list(FP8))
def test_fp8_step_tracks_bf16(runs, fp8):
    if fp8 == "bf16_with_mxfp8_mixed" and _capability() < (10, 0):
        pytest.skip("MXFP8 needs Blackwell (compute capability >= 10.0)")
    ref, run = runs["bf16_mixed"], runs[fp8]
    # bf16 reference: Transformer Engine layers, no FP8.
    assert ref["fp8"] is None and ref["bf16"] and ref["te_modules"] > 0, ref
    # The FP8 run really is one.
    assert run["fp8"] == ("e4m3" if fp8 == "bf16_with_mxfp8_mixed" else "hybrid"), run
    assert run["fp8_recipe"] == FP8[fp8] and run["bf16"] and run["te_modules"] > 0, run
    base = [r["loss"] for r in ref["records"]]
    got = [r["loss"] for r in run["records"]]
    assert [r["step"] for r in run["records"]] == list(range(STEPS))
    assert all(math.isfinite(x) for x in base + got), (base, got)
    assert base[0] - base[-1] > 1.0 and got[0] - got[-1] > 1.0, (base, got)  # both learn
    rel = [abs(g - b) / b for b, g in zip(base, got)]
    assert max(rel) < TOLERANCE, f"{fp8}: per-step relative loss difference {rel} vs bf16 {base}"
