"""Skip megatron-core's runtime compile of the dataset helpers when the wheel ships them.

Upstream: megatron-core 0.16.1 and 0.19.2 (pip wheels), reached through Megatron-Bridge 0.3.1's
and 0.6.2's ``initialize_megatron`` (the same code in both). ``megatron.core.datasets.utils.compile_helpers()`` runs ``make`` in the
installed package directory, but the wheel ships the compiled ``helpers_cpp`` extension and no
Makefile: ``make`` fails and the process calls ``sys.exit(1)`` with no traceback. This hits GPU
and CPU installs alike.

Fix: when ``megatron.core.datasets.helpers_cpp`` imports, compiling is unnecessary; otherwise
the original function runs (and fails as before, with its own message).

Remove when: megatron-core's compile_helpers checks for the prebuilt extension itself, or the
pinned megatron-core range no longer includes a wheel without the Makefile.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

UPSTREAM = ("megatron-core==0.16.1", "megatron-core==0.19.2")
# Bridge's initialize module imports the function by name, so both bindings are replaced.
TARGETS = (("megatron.core.datasets.utils", "compile_helpers"),
           ("megatron.bridge.training.initialize", "compile_helpers"))
_MARK = "__rlpt_patched__"


def helpers_prebuilt() -> bool:
    try:
        importlib.import_module("megatron.core.datasets.helpers_cpp")
    except ImportError:
        return False
    return True


def _wrap(original: Callable[[], Any]) -> Callable[[], Any]:
    def compile_helpers() -> Any:
        if helpers_prebuilt():
            return None
        return original()

    setattr(compile_helpers, _MARK, original)
    compile_helpers.__doc__ = original.__doc__
    return compile_helpers


def apply() -> bool:
    """Patch every binding that exists; returns True when something changed (idempotent)."""
    changed = False
    for module_name, attr in TARGETS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:  # Bridge not installed: only the core binding matters
            continue
        current = getattr(module, attr)  # AttributeError = upstream moved: fail loudly
        if getattr(current, _MARK, None) is None:
            setattr(module, attr, _wrap(current))
            changed = True
    return changed
