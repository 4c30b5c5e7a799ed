"""Worker bodies for the Bridge ``pretrain()`` tests (spawned; Bridge mutates process state)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

RECIPE = "rlpt_plugin.recipes.tiny:tiny_config"


class _FinalWeights:
    """Callback capturing every parameter at the end of training."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_train_end(self, context: Any) -> None:
        for i, chunk in enumerate(context.model):
            for name, p in chunk.named_parameters():
                self.weights[f"{i}.{name}"] = p.detach().clone()


def _train(out: Path, overrides: list[str],
           recipe: str = RECIPE) -> tuple[list[dict[str, float]], dict[str, torch.Tensor]]:
    from rlpt_plugin.megatron.host import launch  # first: installs the CPU import guard
    from megatron.bridge.training.callbacks import Callback

    capture = type("Capture", (_FinalWeights, Callback), {})()
    cfg = launch.build_config(recipe, out, overrides)
    records = launch.run(cfg, out / "metrics.jsonl", extra_callbacks=[capture])
    return records, capture.weights


def resume_case(rank: int, world_size: int, root: str, overrides: list[str], steps: int,
                stop_at: int, recipe: str = RECIPE) -> dict[str, Any]:
    root_path = Path(root)
    common = [f"train.train_iters={steps}", f"checkpoint.save_interval={stop_at}", *overrides]
    straight, straight_w = _train(root_path / "straight", common, recipe)
    first, _ = _train(root_path / "resumed", [*common, f"train.exit_interval={stop_at}"], recipe)
    second, resumed_w = _train(root_path / "resumed", common, recipe)
    return {"straight": straight, "first": first, "second": second,
            "straight_weights": straight_w, "resumed_weights": resumed_w}


def learning_case(rank: int, world_size: int, root: str, runs: dict[str, list[str]]) -> dict[str, Any]:
    return {name: _train(Path(root) / name, ["checkpoint.save=null", "checkpoint.load=null", *ov])[0]
            for name, ov in runs.items()}


def pp2_case(rank: int, world_size: int, root: str) -> dict[str, list[dict[str, float]]]:
    """Both model-pass reference modes under PP2: each scores candidates through both stages."""
    pp2 = ["model.pipeline_model_parallel_size=2", "train.train_iters=3"]
    frozen, _ = _train(Path(root) / "frozen", [*pp2, "rlpt.loss.reference=frozen",
                                               "checkpoint.save_interval=3"])
    rollout, _ = _train(Path(root) / "rollout", [*pp2, "rlpt.loss.reference=rollout",
                                                 "checkpoint.save=null", "checkpoint.load=null"])
    return {"frozen": frozen, "rollout": rollout}


def store_case(rank: int, world_size: int, root: str, overrides: list[str]) -> list[dict[str, float]]:
    records, _ = _train(Path(root) / "run", overrides)
    return records


def train_case(rank: int, world_size: int, root: str, overrides: list[str], recipe: str) -> list[dict[str, float]]:
    records, _ = _train(Path(root) / "run", overrides, recipe)
    return records


def stopped_case(rank: int, world_size: int, root: str, overrides: list[str]) -> dict[str, Any]:
    """A run expected to stop: how it stopped, on this rank, and whether a judge thread survived."""
    import threading

    from rlpt_plugin.megatron.candidates.candidate_stage import JudgeFailure

    try:
        records, _ = _train(Path(root) / "run", overrides)
        return {"stopped": None, "records": records}
    except JudgeFailure as err:
        return {"stopped": str(err), "judge_threads": [t.name for t in threading.enumerate()
                                                       if t.name == "rlpt-judge"]}
