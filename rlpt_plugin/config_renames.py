"""Config names that changed and are still accepted, each with a warning that names the new one.

An override that uses an old key (``rlpt.data.lm_on_original=false``) or an old value
(``rlpt.judge.fallback=nll_original``) is rewritten to the new name before Bridge applies the
overrides (:func:`translate_overrides`); Python code that reads or sets the old attribute goes
through a property of the section that warns the same way. Why each was renamed:

- ``rlpt.data.lm_on_original`` -> ``lm_on_window``: "original" is the pool's candidate (the corpus
  suffix, ``rlpt.candidates.original``); this switch is about the LM term on the whole window
  (prefix + the corpus's suffix), whether or not that suffix is a candidate.
- ``rlpt.judge.fallback: nll_original`` -> ``rf_nll_on_original``: an unjudged pool's original
  suffix becomes its RF-NLL target (weighted by the RF-NLL term), not a next-token row.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable

RENAMED_KEYS: dict[str, str] = {"rlpt.data.lm_on_original": "rlpt.data.lm_on_window"}
RENAMED_VALUES: dict[str, dict[str, str]] = {"rlpt.judge.fallback": {"nll_original": "rf_nll_on_original"}}


def renamed(old: str, new: str) -> None:
    warnings.warn(f"`{old}` is now `{new}`; the old name still works but will go.", DeprecationWarning,
                  stacklevel=3)


def translate_overrides(overrides: Iterable[str]) -> list[str]:
    """``overrides`` (Hydra style: ``key=value``, ``+key=value``, ``~key``) with renamed keys and
    values replaced by their new names, one warning per replacement."""
    out = []
    for item in overrides:
        body = item.lstrip("+~")
        sign = item[:len(item) - len(body)]
        key, eq, value = body.partition("=")
        new_key = RENAMED_KEYS.get(key, key)
        new_value = RENAMED_VALUES.get(new_key, {}).get(value, value) if eq else value
        if new_key != key:
            renamed(key, new_key)
        if new_value != value:
            renamed(f"{new_key}={value}", f"{new_key}={new_value}")
        out.append(f"{sign}{new_key}{eq}{new_value}")
    return out


def old_value_hint(path: str, value: object) -> str:
    """' (renamed: now X)' when ``value`` is an old name of a value of ``path``, else ''."""
    new = RENAMED_VALUES.get(path, {}).get(value) if isinstance(value, str) else None
    return f" (`{value}` was renamed: it is now `{new}`)" if new else ""
