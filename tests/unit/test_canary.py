"""Canary: fails loudly when the installed megatron-core / Megatron-Bridge is not a tested stack,
or when a symbol, guard or patch target that the plugin relies on moved.

The tested stacks and what differs between them live in rlpt_plugin/megatron/host/compat.py; the CPU
shims and patches name the upstream versions they were verified against. A version bump must
re-run tests/distributed and tests/bridge, then update compat.STACKS, SYMBOLS and IMPORT_GUARDS.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect
import re

import pytest

from rlpt_plugin.megatron.host import bridge_cpu, compat, cpu_backend
from rlpt_plugin.patches import compile_helpers

STACK = compat.installed_stack() if compat.installed_versions() in compat.STACKS.values() else None


def test_installed_stack_is_a_tested_one():
    compat.installed_stack()  # raises UnknownStackError naming the versions and what to re-run


def _stack() -> str:
    if STACK is None:
        pytest.fail(f"untested stack {compat.installed_versions()}: see test_installed_stack_is_a_tested_one")
    return STACK


@pytest.mark.parametrize("symbol", compat.SYMBOLS, ids=lambda s: s.name)
def test_symbols_are_where_compat_says(symbol):
    stack = _stack()
    assert stack in symbol.where, f"compat.SYMBOLS[{symbol.name!r}] says nothing about stack {stack}"
    location = symbol.where[stack]
    if location is not None:
        compat.resolve(location)  # raises ImportError/AttributeError when it moved
        return
    others = [loc for loc in symbol.where.values() if loc is not None]
    for other in others:
        with pytest.raises((ImportError, AttributeError)):
            compat.resolve(other)
            pytest.fail(f"{other} exists on stack {stack}, but compat.SYMBOLS says it does not: "
                        f"its path ({symbol.path}) may be obsolete")


def _imports_at_module_level(source: str, package: str) -> bool:
    return re.search(rf"^(import|from) {re.escape(package)}\b", source, re.M) is not None


@pytest.mark.parametrize("guard", compat.IMPORT_GUARDS, ids=lambda g: f"{g.importer}-{g.package}")
def test_import_guards_match_upstream(guard):
    stack = _stack()
    try:
        spec = importlib.util.find_spec(guard.importer)
    except ModuleNotFoundError:  # its package does not exist on this stack
        spec = None
    if stack not in guard.stacks:  # upstream guards it (or lacks the module) on this stack
        source = open(spec.origin).read() if spec is not None and spec.origin else ""
        assert not _imports_at_module_level(source, guard.package), (
            f"{guard.importer} imports {guard.package} unguarded on stack {stack}: add it to the "
            "guard's stacks in compat.IMPORT_GUARDS")
        return
    assert spec is not None and spec.origin, f"{guard.importer} moved: update compat.IMPORT_GUARDS"
    assert _imports_at_module_level(open(spec.origin).read(), guard.package), (
        f"{guard.importer} no longer imports {guard.package} unguarded on stack {stack}: drop "
        "this stack from the guard in compat.IMPORT_GUARDS")
    assert bridge_cpu.GUARDED_IMPORTERS[guard.importer] == guard.package


def test_patches_name_the_installed_versions():
    core = f"megatron-core=={importlib.metadata.version('megatron-core')}"
    for module in (cpu_backend, compile_helpers):
        assert core in module.UPSTREAM, (
            f"{module.__name__} was verified against {module.UPSTREAM}, not {core}: re-run "
            "tests/distributed and tests/bridge, then add the version")


@pytest.mark.parametrize("patch", cpu_backend.PATCHES, ids=lambda p: f"{p.module}.{p.attr}")
def test_cpu_backend_targets_exist(patch):
    owner, name, original = patch.target()  # raises if the module or attribute moved
    assert callable(original), f"{patch.module}.{patch.attr} is no longer callable"


def test_import_guard_hides_nothing_from_other_modules():
    bridge_cpu.install_import_guard()
    importlib.import_module("megatron.bridge.peft.lora")  # imports TE unguarded upstream
    importlib.import_module("megatron.bridge.training.pretrain")  # nvidia_resiliency_ext on 0.6
    fp8_utils = importlib.import_module("megatron.core.fp8_utils")
    assert fp8_utils.HAVE_TE is False  # megatron-core still sees no Transformer Engine
    with pytest.raises(ImportError):
        import transformer_engine  # noqa: F401


def test_nvidia_resiliency_ext_is_absent_or_new_enough_for_core():
    """megatron-core 0.19 asserts its minimum nvidia-resiliency-ext version when the package is
    installed (checkpoint saving fails otherwise); the 0.16 stack uses 0.4.1."""
    if _stack() != "0.19":
        return
    minimum = compat.resolve("megatron.core.dist_checkpointing.strategies.nvrx:NVRX_MIN_VERSION")
    if importlib.util.find_spec("nvidia_resiliency_ext") is not None:
        from packaging.version import Version

        installed = importlib.metadata.version("nvidia-resiliency-ext")
        assert Version(installed) >= Version(minimum), (
            f"nvidia-resiliency-ext {installed} is installed, but megatron-core requires >= {minimum}")


def test_bridge_sets_the_dataset_tokenizer_as_compat_says():
    """0.3.1's setup sets cfg.dataset.tokenizer on any dataset config; 0.6.2 only where the config
    has the attribute (compat.keep_build_tokenizer)."""
    source = inspect.getsource(importlib.import_module("megatron.bridge.training.setup"))
    conditional = 'if hasattr(cfg.dataset, "tokenizer"):' in source
    assert "cfg.dataset.tokenizer = tokenizer" in source
    assert conditional == (_stack() == "0.19")


def test_bridge_restores_loader_state_only_through_restore_state():
    """0.6.2 restores loader state by calling restore_state, which the plugin's step feed must
    not define (the rlpt callback restores it after attaching the step source)."""
    from rlpt_plugin.megatron.host.bridge_host import StepFeed

    assert not hasattr(StepFeed, "restore_state")
    if _stack() == "0.19":
        source = inspect.getsource(compat.resolve(
            "megatron.bridge.training.checkpointing:maybe_load_dataloader_state"))
        assert 'hasattr(iterable, "restore_state")' in source


def test_initialize_megatron_still_takes_allow_no_cuda():
    setup = importlib.import_module("megatron.bridge.training.setup")
    initialize = importlib.import_module("megatron.bridge.training.initialize")
    assert setup.initialize_megatron is not None
    assert "allow_no_cuda" in inspect.signature(initialize.initialize_megatron).parameters


def test_compile_helpers_patch_applies_cleanly_and_idempotently():
    for module_name, attr in compile_helpers.TARGETS:
        assert callable(getattr(importlib.import_module(module_name), attr)), f"{module_name}.{attr} moved"
    compile_helpers.apply()
    assert compile_helpers.apply() is False  # second application changes nothing
    assert compile_helpers.helpers_prebuilt(), "the wheel no longer ships helpers_cpp"
    for module_name, attr in compile_helpers.TARGETS:
        patched = getattr(importlib.import_module(module_name), attr)
        assert patched() is None  # no `make`, no sys.exit


def test_llama_provider_has_the_llama_defaults():
    import torch.nn.functional as F

    model = compat.llama_model_provider(num_layers=2, hidden_size=64, num_attention_heads=4)
    assert (model.normalization, model.gated_linear_unit, model.position_embedding_type) == ("RMSNorm", True, "rope")
    assert model.activation_func is F.silu and model.add_bias_linear is False
    assert model.share_embeddings_and_output_weights is False and model.seq_length == 4096
