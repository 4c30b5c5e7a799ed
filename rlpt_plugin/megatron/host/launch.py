"""Load a recipe by dotted path, apply Hydra-syntax overrides, validate, run ``pretrain()``.

Works as a single process (sets a loopback rendezvous) and under torchrun/Slurm (reads the
usual RANK/WORLD_SIZE/MASTER_* variables). ``rlpt.*`` and Bridge's own fields take the same
``key=value`` syntax: ``rlpt.loss.beta=0.05 model.tensor_model_parallel_size=2``.
A recipe may return the plugin's ``RLPTConfigContainer`` or any Bridge ``ConfigContainer`` (an
existing job's recipe), which is wrapped by :func:`with_rlpt` keeping every setting of the job.
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
from pathlib import Path
from typing import Any, Callable

from megatron.bridge.training.initialize import destroy_global_state
from megatron.bridge.training.utils.omegaconf_utils import OverridesError, process_config_with_overrides
from omegaconf.errors import OmegaConfBaseException

from rlpt_plugin.config import ConfigError
from rlpt_plugin.config_renames import translate_overrides
from rlpt_plugin.megatron.host.compat import safe_yaml_representers
from rlpt_plugin.megatron.host.recipe_host import call_recipe, cpu_layer_spec
from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer, rlpt_pretrain, with_rlpt
from rlpt_plugin.megatron.host.metrics_log import MetricsLog
from rlpt_plugin.megatron.host.validation import host_errors


def load_recipe(path: str) -> Callable[..., Any]:
    """``package.module:function`` or ``package.module.function``, importable from the installed
    packages or the working directory (as with ``python -m``: a team's recipes need no install)."""
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.append(os.getcwd())
    module_name, sep, attr = path.partition(":")
    if not sep:
        module_name, _, attr = path.rpartition(".")
    if not module_name or not attr:
        raise ConfigError([f"`--recipe` must be 'package.module:function', but is {path!r}."])
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError([f"`--recipe` module {module_name!r} cannot be imported: {err}"]) from err
    recipe = getattr(module, attr, None)
    if not callable(recipe):
        raise ConfigError([f"`--recipe` {path!r}: {module_name} has no callable {attr!r}."])
    return recipe


def build_config(recipe: str, out_dir: str | Path, overrides: list[str]) -> RLPTConfigContainer:
    from megatron.bridge.training.config import ConfigContainer

    cfg = call_recipe(load_recipe(recipe), out_dir)  # Bridge's shipped recipes take no out_dir
    if isinstance(cfg, ConfigContainer) and not isinstance(cfg, RLPTConfigContainer):
        cfg = with_rlpt(cfg)  # an existing Bridge job: its own data stays as dataset.job_data
    if not isinstance(cfg, RLPTConfigContainer):
        raise ConfigError([f"recipe {recipe!r} must return a Bridge ConfigContainer, "
                           f"but returned {type(cfg).__name__}."])
    if overrides:
        try:
            cfg = process_config_with_overrides(cfg, cli_overrides=translate_overrides(overrides))
        except (OverridesError, OmegaConfBaseException) as err:
            raise ConfigError([f"override rejected: {err}"]) from err
    cpu_layer_spec(cfg.model)  # a shipped recipe's TE layer spec under model.transformer_impl=local
    errors = cfg.rlpt.errors() + host_errors(cfg)
    if errors:
        raise ConfigError(errors)
    return cfg


def resolved_yaml(cfg: RLPTConfigContainer) -> str:
    """The whole resolved job config (Bridge's fields and ``rlpt``) as YAML."""
    import yaml
    with safe_yaml_representers():
        return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=False)


def store_suffix_length(cfg: RLPTConfigContainer) -> int | None:
    """N of the job's first rewritten store (its manifest), or None when it does not exist yet."""
    import json

    stores = cfg.rlpt.data.stores
    manifest = Path(stores[0]) / "manifest.json" if stores else None
    if manifest is None or not manifest.exists():
        return None
    return int(json.loads(manifest.read_text())["suffix_length"])


def dry_run(recipe: str, out_dir: str | Path, overrides: list[str], *, suffix_length: int,
            step_time_s: float, gpus: int = 8) -> str:
    """The resolved config, the per-step workload plan and its estimated split on ``gpus``
    H100s, without initialising anything. ``suffix_length``: N when the stores do not exist yet
    (their manifest wins when they do; synthetic groups have their own)."""
    from rlpt_plugin.plan_config import plan_from_config
    from rlpt_plugin.plan_report import format_plan
    from rlpt_plugin.step_estimate import ModelShape, estimate, format_estimate

    cfg = build_config(recipe, out_dir, overrides)
    n = store_suffix_length(cfg) or suffix_length if cfg.rlpt.data.source == "store" else None
    try:
        plan = plan_from_config(cfg.rlpt, seq_length=cfg.model.seq_length, suffix_length=n,
                                step_time_s=step_time_s, global_batch_size=cfg.train.global_batch_size)
        shape = ModelShape.from_model(cfg.model)
        fp8 = bool(getattr(cfg.model, "fp8", None)) or "fp8" in str(getattr(cfg, "mixed_precision", "") or "")
        cost = estimate(plan, shape, gpus=gpus, tensor_parallel=cfg.model.tensor_model_parallel_size,
                        pipeline_parallel=cfg.model.pipeline_model_parallel_size, fp8=fp8,
                        reference=cfg.rlpt.loss.reference if cfg.rlpt.loss.has_rl_terms() else "none")
    except ValueError as err:
        raise ConfigError([f"workload plan: {err}"]) from err
    return (f"# resolved config of {recipe}\n{resolved_yaml(cfg)}\n{format_plan(plan)}\n"
            f"{format_estimate(cost, shape)}\n")


def _single_process_env() -> None:
    """torchrun's variables if set; else Slurm's (one task per GPU under srun); else one process."""
    if "RANK" in os.environ:
        return
    if "SLURM_PROCID" in os.environ and "MASTER_ADDR" in os.environ:
        os.environ.update(RANK=os.environ["SLURM_PROCID"], WORLD_SIZE=os.environ["SLURM_NTASKS"],
                          LOCAL_RANK=os.environ.get("SLURM_LOCALID", "0"))
        os.environ.setdefault("MASTER_PORT", "29500")
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1",
                      LOCAL_RANK="0")


def run(cfg: RLPTConfigContainer, metrics_path: str | Path,
        extra_callbacks: list[Any] | None = None) -> list[dict[str, float]]:
    """``pretrain()`` with the metrics log; returns the per-step metrics of this rank.

    A run that stops at ``train.exit_interval`` leaves megatron's global state (micro-batch
    calculator, parallel groups) behind, and may end with ``sys.exit(0)``; both are handled so
    the process can train again (tests, notebooks, several phases of a demo).
    """
    log = MetricsLog(metrics_path)
    try:
        rlpt_pretrain(cfg, extra_callbacks=[log, *(extra_callbacks or [])])
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    finally:
        destroy_global_state()  # idempotent
    return log.records


def train(recipe: str, out_dir: str | Path, overrides: list[str],
          extra_callbacks: list[Any] | None = None) -> list[dict[str, float]]:
    """Run a job from a recipe and overrides; returns the per-step metrics."""
    _single_process_env()
    cfg = build_config(recipe, out_dir, overrides)
    return run(cfg, Path(out_dir) / "metrics.jsonl", extra_callbacks)
