"""Bridge's own recipes under ``rlpt train``: called as declared, wrapped unchanged.

A shipped recipe (``megatron.bridge.recipes.llama.llama3:llama32_1b_pretrain_config``, say) is a
function of no arguments returning a plain ``ConfigContainer`` for a GPU cluster; ``rlpt train``
wraps it with ``with_rlpt`` (its dataset becomes ``dataset.job_data``) and every other setting is
the recipe's, changed only by command-line overrides. Two things the overrides cannot say:

- where the run writes: the recipe writes under ``./nemo_experiments``, so :func:`call_recipe`
  moves its checkpoints and TensorBoard logs under ``--out`` (overrides still win);
- the layer spec: ``model.transformer_layer_spec`` is a function, which Bridge's override
  parser excludes from overrides, and the shipped recipes use Bridge's Transformer Engine specs.
  ``model.transformer_impl=local`` is megatron-core's own switch for the local (non-TE)
  implementation, so :func:`cpu_layer_spec` takes it to mean Bridge's ``local_layer_spec``;
  without TE and without that switch, it is a setup error naming the field.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host.validation import transformer_engine_available

# Bridge's layer-spec functions that build Transformer Engine modules (both tested versions)
TE_SPECS = ("default_layer_spec", "transformer_engine_layer_spec", "transformer_engine_full_layer_spec")


def call_recipe(recipe: Callable[..., Any], out_dir: str | Path) -> Any:
    """The plugin's recipes take the output directory as their first argument; Bridge's shipped
    ones take none, and get their checkpoints and TensorBoard logs moved under ``out_dir``
    (``ckpt/``, ``tb/``, as the plugin's recipes lay them out)."""
    params = [p for p in inspect.signature(recipe).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if params:
        return recipe(out_dir)
    cfg = recipe()
    out = Path(out_dir)
    checkpoint, logger = getattr(cfg, "checkpoint", None), getattr(cfg, "logger", None)
    if checkpoint is not None:
        checkpoint.save = checkpoint.load = str(out / "ckpt")
    if logger is not None and getattr(logger, "tensorboard_dir", None) is not None:
        logger.tensorboard_dir = str(out / "tb")
    return cfg


def _te_spec_name(model: Any) -> str | None:
    spec = getattr(model, "transformer_layer_spec", None)
    name = getattr(spec, "__name__", None)
    module = getattr(spec, "__module__", "") or ""
    return name if name in TE_SPECS and module.startswith("megatron.bridge.") else None


def cpu_layer_spec(model: Any) -> None:
    """``model.transformer_impl=local`` with one of Bridge's TE layer specs -> Bridge's local
    spec; a TE spec without Transformer Engine installed -> :class:`ConfigError`."""
    name = _te_spec_name(model)
    if name is None:
        return
    if getattr(model, "transformer_impl", None) == "local":
        from megatron.bridge.models.gpt_provider import local_layer_spec

        model.transformer_layer_spec = local_layer_spec
    elif not transformer_engine_available():
        raise ConfigError([f"`model.transformer_layer_spec` is Bridge's {name} (Transformer Engine modules), "
                           "but Transformer Engine is not installed: set model.transformer_impl=local "
                           "(Bridge's local_layer_spec) or install transformer-engine[pytorch]."])
