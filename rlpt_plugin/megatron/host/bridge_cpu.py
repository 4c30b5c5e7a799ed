"""Megatron-Bridge ``pretrain()`` on a machine without CUDA: the runtime shims (Bridge 0.3.1 and
0.6.2; compat.py lists what differs).

Applied by :func:`enable_bridge_cpu` only when CUDA is absent, after the megatron-core CPU
backend (:mod:`rlpt_plugin.megatron.host.cpu_backend`). Each shim, and why:

1. Unguarded imports. ``megatron/bridge/peft/lora_layers.py`` and ``peft/lora.py`` import
   ``transformer_engine.pytorch`` at module level (lora_layers subclasses ``te.Linear``), and
   megatron-core's ``inference/contexts/attention_context/triton/tensor_ops.py`` imports
   ``triton`` and applies ``@triton.jit`` at import time. A global fake package would be wrong:
   ~30 megatron-core modules probe ``import transformer_engine`` and would switch to TE code
   paths. The same holds for Hugging Face ``datasets``, imported at module level by Bridge's SFT
   and HF-dataset builder modules only, and for ``nvidia_resiliency_ext`` on Bridge 0.6 (see
   compat.IMPORT_GUARDS for every importer and the stack that needs it). So an ``__import__``
   wrapper hands a placeholder module to THOSE importers only and writes nothing to
   ``sys.modules``; everyone else still gets ImportError.
2. ``training/setup.py`` calls ``initialize_megatron()`` without ``allow_no_cuda``, which
   asserts "Megatron requires CUDA." We bind ``allow_no_cuda=True``.
3. The dataset-helper compile crash is not CPU-specific; it lives in ``rlpt_plugin/patches``.
Config-level requirements (gloo backend, weight-decay schedule, fusions off) are set by the
CPU recipe, not patched.
"""

from __future__ import annotations

import builtins
import functools
import importlib
import types
from typing import Any

from rlpt_plugin.megatron.host import compat, cpu_backend
from rlpt_plugin import patches

# Modules allowed to receive the placeholder, and the top-level packages they may ask for: the
# union over the tested stacks (compat.IMPORT_GUARDS says which stack needs which).
GUARDED_IMPORTERS = compat.guarded_importers()


class _PlaceholderMeta(type):
    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder_class(name)


class _Placeholder(metaclass=_PlaceholderMeta):
    """Subclassable (``class X(te.Linear)``), usable as a decorator (``@triton.jit``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._args = args

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if len(args) == 1 and callable(args[0]) and not kwargs:
            return args[0]
        return _Placeholder()

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return _placeholder_class(name)


@functools.lru_cache(maxsize=None)
def _placeholder_class(name: str) -> type:
    return _PlaceholderMeta(name, (_Placeholder,), {})


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in ("pytorch", "language", "common"):
            return _PlaceholderModule(f"{self.__name__}.{name}")
        return _placeholder_class(name)


_original_import = builtins.__import__


def _guarded_import(name: str, globals: dict | None = None, locals: dict | None = None,
                    fromlist: tuple = (), level: int = 0) -> Any:
    if level == 0 and globals is not None:
        wanted = GUARDED_IMPORTERS.get(globals.get("__name__", ""))
        if wanted is not None and name.split(".")[0] == wanted:
            try:
                return _original_import(name, globals, locals, fromlist, level)
            except ImportError:
                top = _PlaceholderModule(wanted)
                if fromlist or "." not in name:
                    return top if not fromlist else _PlaceholderModule(name)
                return top
    return _original_import(name, globals, locals, fromlist, level)


def _allow_no_cuda(original: Any) -> Any:
    @functools.wraps(original)
    def initialize_megatron(*args: Any, **kwargs: Any) -> Any:
        kwargs["allow_no_cuda"] = True
        return original(*args, **kwargs)

    initialize_megatron.__rlpt_patched__ = True  # type: ignore[attr-defined]
    return initialize_megatron


def install_import_guard() -> None:
    """Let Bridge's modules import without TE/triton/datasets (no-op when CUDA is present).

    Must run before the first ``import megatron.bridge...`` of a process.
    """
    if not cpu_backend.cuda_available() and builtins.__import__ is not _guarded_import:
        builtins.__import__ = _guarded_import


def enable_bridge_cpu() -> bool:
    """Make Bridge's ``pretrain()`` runnable here. True when the CPU shims are active."""
    patches.apply_all()
    if not cpu_backend.enable_cpu_backend():
        return False
    install_import_guard()
    setup = importlib.import_module("megatron.bridge.training.setup")
    if not getattr(setup.initialize_megatron, "__rlpt_patched__", False):
        setup.initialize_megatron = _allow_no_cuda(setup.initialize_megatron)
    patches.apply_all()  # Bridge's own binding of compile_helpers now exists
    return True
