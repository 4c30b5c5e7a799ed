"""Upstream patches that public extension points cannot replace, needed on GPU machines too.

Each patch module states the upstream version it targets, why it exists, and when to delete it,
and exposes ``apply() -> bool`` (idempotent; True when it changed something). CPU-only runtime
shims are not here: see rlpt_plugin/megatron/host/cpu_backend.py and bridge_cpu.py.
"""

from rlpt_plugin.patches import compile_helpers

ALL = (compile_helpers,)


def apply_all() -> None:
    for patch in ALL:
        patch.apply()
