"""Canary: fails loudly when an upstream symbol that the CPU backend or a patch replaces moves.

The shims are verified against the pinned versions below; a version bump must re-run the
multi-process and Bridge tests and update this list.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import inspect

import pytest

from rlpt_plugin.megatron import bridge_cpu, cpu_backend
from rlpt_plugin.patches import compile_helpers

PINNED = {"megatron-core": "0.16.1", "megatron-bridge": "0.3.1"}


@pytest.mark.parametrize("package,version", sorted(PINNED.items()))
def test_pinned_versions(package, version):
    assert importlib.metadata.version(package) == version, (
        f"{package} is not the version the CPU shims were verified against ({version}): re-run "
        "tests/distributed and tests/bridge, then update PINNED")


@pytest.mark.parametrize("patch", cpu_backend.PATCHES, ids=lambda p: f"{p.module}.{p.attr}")
def test_cpu_backend_targets_exist(patch):
    owner, name, original = patch.target()  # raises if the module or attribute moved
    assert callable(original), f"{patch.module}.{patch.attr} is no longer callable"


@pytest.mark.parametrize("importer,package", sorted(bridge_cpu.GUARDED_IMPORTERS.items()))
def test_guarded_importers_still_import_unguarded(importer, package):
    spec = importlib.util.find_spec(importer)
    assert spec is not None and spec.origin, f"{importer} moved: update GUARDED_IMPORTERS"
    source = open(spec.origin).read()
    assert f"import {package}" in source or f"from {package} import" in source, (
        f"{importer} no longer imports {package}: its entry in GUARDED_IMPORTERS can go")


def test_import_guard_hides_nothing_from_other_modules():
    bridge_cpu.install_import_guard()
    importlib.import_module("megatron.bridge.peft.lora")  # imports TE unguarded upstream
    fp8_utils = importlib.import_module("megatron.core.fp8_utils")
    assert fp8_utils.HAVE_TE is False  # megatron-core still sees no Transformer Engine
    with pytest.raises(ImportError):
        import transformer_engine  # noqa: F401


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
