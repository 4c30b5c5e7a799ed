"""Field checks of the ``rlpt`` config sections: each appends one message naming the field."""

from __future__ import annotations

import math
from typing import Any

from rlpt_plugin.config_renames import old_value_hint


def _number(errors: list[str], path: str, value: Any, *, minimum: float | None = None,
            strictly: bool = False, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        errors.append(f"`{path}` must be a finite {'integer' if integer else 'number'}, "
                      f"but is {value!r} instead.")
        return
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        errors.append(f"`{path}` must be {'>' if strictly else '>='} {minimum}, but is {value!r} instead.")


def _choice(errors: list[str], path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"`{path}` must be one of {', '.join(choices)}, but is {value!r} instead"
                      f"{old_value_hint(path, value)}.")
