"""megatron-core / Megatron-Bridge version differences: which version needs which code path.

Two stacks are tested (:data:`STACKS`): megatron-core 0.16.1 + Bridge 0.3.1 (Python 3.11) and
megatron-core 0.19.2 + Bridge 0.6.2 (Python 3.12; core >= 0.17 and Bridge >= 0.4 require it).
Every difference the plugin depends on is one entry below, saying where each tested stack has
the symbol (or that it lacks it) and which helper here copes. The helpers choose by feature, not
by version number, so a release in between takes whichever path it supports; the canary
(tests/unit/test_canary.py) checks every entry against the installed stack and fails loudly on a
stack that is not listed here.

Runtime differences (not symbols), verified by reading the pinned sources and by tests/bridge:

- Dataset tokenizer. Bridge 0.3.1's ``setup()`` sets ``cfg.dataset.tokenizer`` on any dataset
  config; 0.6.2 only when the config has a ``tokenizer`` attribute. ``RLPTDataProvider`` has no
  such field (a field would put a runtime object into ``run_config.yaml``), so on 0.6.2
  :func:`keep_build_tokenizer` sets the same plain attribute from the build context, as 0.3.1's
  setup did, and the job-data rows read it from there on both stacks.
- Loader state. 0.3.1 calls the iterator's ``save_state`` at a checkpoint only when
  ``dataset.dataloader_save`` is set (a field the plugin's provider declares) and never loads it
  back. 0.6.2 makes ``dataloader_save``/``dataloader_load`` fields of every ``DataloaderConfig``,
  writes the state under ``checkpoint.save/energon`` when ``dataloader_save`` is None, and in
  ``setup()`` (before ``on_train_start``) calls ``restore_state`` on iterators that define it.
  The plugin keeps one path on both: :data:`NO_LOADER_STATE` ("", which both versions read as
  "do not save") is the provider's default, ``rlpt_pretrain`` points ``dataloader_save`` at
  ``checkpoint.save`` only when pools are in flight across steps, and the step feed defines no
  ``restore_state``: the rlpt callback restores the state at train start, after it has attached
  the step source (which does not exist yet when Bridge's restore runs).
- Recipes. Bridge's shipped recipes (both versions) take no arguments; the plugin's recipes take
  the output directory (recipe_host.call_recipe calls each the way it is declared).
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from typing import Any, Callable

STACKS = {  # name -> tested versions
    "0.16": {"megatron-core": "0.16.1", "megatron-bridge": "0.3.1"},
    "0.19": {"megatron-core": "0.19.2", "megatron-bridge": "0.6.2"},
}
NO_LOADER_STATE = ""  # dataset.dataloader_save value that both Bridge versions read as "do not save"


class UnknownStackError(RuntimeError):
    """The installed megatron-core / Megatron-Bridge pair is not one of :data:`STACKS`."""


def installed_versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("megatron-core", "megatron-bridge"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    return found


def installed_stack() -> str:
    """The name of the tested stack that is installed; raises :class:`UnknownStackError`."""
    found = installed_versions()
    for name, versions in STACKS.items():
        if versions == found:
            return name
    tested = "; ".join(f"{v['megatron-core']} + {v['megatron-bridge']}" for v in STACKS.values())
    raise UnknownStackError(
        f"megatron-core {found['megatron-core']} + megatron-bridge {found['megatron-bridge']} is not a "
        f"tested stack ({tested}): run tests/unit/test_canary.py, tests/distributed and tests/bridge "
        "on it, then add it to rlpt_plugin/megatron/host/compat.py STACKS and SYMBOLS")


# ---------------------------------------------------------------------------------------------
# Symbols: where each tested stack has them ("module:attr.attr"), or None where it has none
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Symbol:
    name: str
    where: dict[str, str | None]  # stack -> location, None = absent there
    path: str  # what the plugin does about it


SYMBOLS = (
    Symbol("LlamaModelProvider",
           {"0.16": "megatron.bridge.models.llama.llama_provider:LlamaModelProvider", "0.19": None},
           "gone in Bridge 0.4: llama_model_provider() is a GPTModelProvider with 0.3.1's Llama defaults"),
    Symbol("safe_yaml_representers (old home)",
           {"0.16": "megatron.bridge.training.utils.config_utils:safe_yaml_representers", "0.19": None},
           "moved in Bridge 0.5; the plugin imports it from utils.yaml_utils, which both have"),
    Symbol("safe_yaml_representers",
           {"0.16": "megatron.bridge.utils.yaml_utils:safe_yaml_representers",
            "0.19": "megatron.bridge.utils.yaml_utils:safe_yaml_representers"},
           "imported from here on both stacks"),
    Symbol("DataloaderConfig.dataloader_save",
           {"0.16": None, "0.19": "megatron.bridge.training.config:DataloaderConfig.dataloader_save"},
           "0.3.1: a field of RLPTDataProvider only; 0.6.2: of every dataset config (see module doc)"),
    Symbol("default loader-state directory",
           {"0.16": None, "0.19": "megatron.bridge.training.checkpointing:DATALOADER_STATE_SUBDIR"},
           "0.6.2 saves under checkpoint.save/energon when dataloader_save is None: NO_LOADER_STATE"),
    Symbol("restore of the loader state",
           {"0.16": None, "0.19": "megatron.bridge.training.checkpointing:maybe_load_dataloader_state"},
           "0.6.2 calls restore_state when the iterator has it; StepFeed has none on purpose"),
    Symbol("nvidia-resiliency-ext minimum version",
           {"0.16": None, "0.19": "megatron.core.dist_checkpointing.strategies.nvrx:NVRX_MIN_VERSION"},
           "core 0.19 asserts >= 0.6.0 when the package is installed (the index has 0.4.1): not "
           "installed on that stack; Bridge's unguarded import of it is guarded (IMPORT_GUARDS)"),
    Symbol("initialize_megatron(allow_no_cuda=...)",
           {"0.16": "megatron.bridge.training.initialize:initialize_megatron",
            "0.19": "megatron.bridge.training.initialize:initialize_megatron"},
           "bridge_cpu binds allow_no_cuda=True on both"),
)


def resolve(location: str) -> Any:
    """``module:attr.attr`` -> the object; raises ImportError/AttributeError when absent."""
    module_name, _, attrs = location.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attrs.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------------------------------
# Import guards: upstream modules that import an optional package at module level, unguarded
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImportGuard:
    importer: str
    package: str
    stacks: tuple[str, ...]  # stacks whose importer imports the package unguarded


IMPORT_GUARDS = (
    # lora_layers subclasses te.Linear at class definition
    ImportGuard("megatron.bridge.peft.lora_layers", "transformer_engine", ("0.16", "0.19")),
    ImportGuard("megatron.bridge.peft.lora", "transformer_engine", ("0.16",)),
    # @triton.jit at import time; reached through Bridge's mamba provider (0.16) and through
    # pipeline_parallel/schedules.py -> transformer/moe/paged_stash.py (0.19; new in 0.17+)
    ImportGuard("megatron.core.inference.contexts.attention_context.triton.tensor_ops", "triton", ("0.16",)),
    ImportGuard("megatron.core.transformer.moe.ops.paged_stash", "triton", ("0.19",)),
    # Hugging Face `datasets` (+pyarrow, pandas: ~270 MB) serves only Bridge's SFT/HF datasets
    ImportGuard("megatron.bridge.data.datasets.sft", "datasets", ("0.16",)),
    ImportGuard("megatron.bridge.data.builders.hf_dataset", "datasets", ("0.16",)),
    ImportGuard("megatron.bridge.data.vlm_datasets.hf_dataset_makers", "datasets", ("0.16",)),  # recipes
    ImportGuard("megatron.bridge.data.datasets.gpt_sft", "datasets", ("0.19",)),
    ImportGuard("megatron.bridge.data.sources.hf", "datasets", ("0.19",)),
    ImportGuard("megatron.bridge.data.megatron_mimo.hf_provider", "datasets", ("0.19",)),  # data loaders
    # in-process restart (off unless configured). Installed on 0.16 (0.4.1); on 0.19 installing
    # the index's 0.4.1 trips core's version assert (see SYMBOLS), so the guard stands in
    ImportGuard("megatron.bridge.training.pretrain", "nvidia_resiliency_ext", ("0.16", "0.19")),
    ImportGuard("megatron.bridge.training.inprocess_restart", "nvidia_resiliency_ext", ("0.16", "0.19")),
)


def guarded_importers() -> dict[str, str]:
    """importer -> package, over every stack (a guard only acts when the import fails)."""
    return {g.importer: g.package for g in IMPORT_GUARDS}


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def safe_yaml_representers() -> Any:
    from megatron.bridge.utils.yaml_utils import safe_yaml_representers as representers

    return representers()


def _llama_provider_class() -> type:
    try:
        from megatron.bridge.models.llama.llama_provider import LlamaModelProvider  # Bridge <= 0.3
    except ImportError:  # Bridge >= 0.4: Llama configs come from AutoBridge; rebuild the defaults
        import torch.nn.functional as F
        from megatron.bridge.models import GPTModelProvider

        @dataclass
        class LlamaModelProvider(GPTModelProvider):  # type: ignore[no-redef]
            """Bridge 0.3.1's LlamaModelProvider defaults on a plain GPTModelProvider."""

            normalization: str = "RMSNorm"
            activation_func: Callable = F.silu
            gated_linear_unit: bool = True
            position_embedding_type: str = "rope"
            add_bias_linear: bool = False
            seq_length: int = 4096
            attention_dropout: float = 0.0
            hidden_dropout: float = 0.0
            share_embeddings_and_output_weights: bool = False
            bias_activation_fusion: bool = True
            masked_softmax_fusion: bool = True
            persist_layer_norm: bool = True
            bias_dropout_fusion: bool = True
            apply_rope_fusion: bool = True

    return LlamaModelProvider


def llama_model_provider(**fields: Any) -> Any:
    """A Llama-architecture GPT provider (RMSNorm, SwiGLU, RoPE, no biases) on either Bridge."""
    return _llama_provider_class()(**fields)


def keep_build_tokenizer(provider: Any, context: Any) -> None:
    """Bridge >= 0.6 sets ``dataset.tokenizer`` only on configs that declare it: do what 0.3.1's
    setup does for the plugin's provider (a plain attribute, not a config field)."""
    if getattr(provider, "tokenizer", None) is None and getattr(context, "tokenizer", None) is not None:
        object.__setattr__(provider, "tokenizer", context.tokenizer)
