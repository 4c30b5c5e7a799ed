"""Config groups: named YAML presets composed on the command line.

    rlpt train --recipe X loss=rf_nll judge=safety teacher=gpt_oss_120b candidates=k16_original \\
        world=demo rlpt.loss.beta=0.05

Each group is a folder of ``rlpt_plugin/conf/`` and each option one YAML file in it, holding a
tree rooted at the job config (``rlpt: {judge: {quality: 1.0, safety: 1.0}}``; Bridge sections
such as ``optimizer:`` are allowed). ``available_groups()`` lists them.

API (pure: OmegaConf only, no torch or megatron import):

- ``split_args(args) -> (choices, overrides)``: ``group=option`` where ``group`` is a known group
  name (no dots, no ``+``/``~``) goes to ``choices``; everything else, in order, to
  ``overrides`` (dotted keys, ``+key=value``, ``~key``, ...). A group given twice: the last wins.
- ``compose(choices) -> list[str]``: the ``key=value`` overrides of the chosen files, group by
  group in the order teacher, judge, loss, candidates, world, keys in file order. Values are
  in Hydra override syntax (lists ``[a,b]``, ``null``, strings quoted where needed), so Bridge's
  ``process_config_with_overrides`` applies them like typed ones. A later group overrides an
  earlier one on a shared key (world's ``judge.backend`` beats teacher's). Unknown groups and
  options raise one ``rlpt_plugin.config.ConfigError`` listing every problem and the choices.
- ``expand_args(args) -> list[str]``: ``compose(choices) + overrides``: what the launcher
  hands to Bridge. The group files come FIRST, so the user's own ``key=value`` wins::

      from rlpt_plugin.conf_groups import expand_args
      cfg = build_config(recipe, out_dir, expand_args(args.overrides))
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Iterator

from omegaconf import OmegaConf

GROUPS: tuple[str, ...] = ("teacher", "judge", "loss", "candidates", "world")
"""The groups, in the order their overrides are emitted (later ones win on shared keys)."""

_PLAIN = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]*")
# Bare words Hydra or YAML would read as something other than a string.
_KEYWORDS = {"true", "false", "null", "nan", "inf", "yes", "no", "on", "off", "y", "n"}


def _error(problems: list[str]) -> Exception:
    from rlpt_plugin.config import ConfigError  # lazy: rlpt_plugin.config pulls in torch

    return ConfigError(problems)


def _conf_dir() -> Any:
    return resources.files("rlpt_plugin") / "conf"


def available_groups() -> dict[str, list[str]]:
    """Group name -> sorted option names (the YAML file stems), groups in emission order."""
    root = _conf_dir()
    out: dict[str, list[str]] = {}
    for group in GROUPS:
        folder = root / group
        files = folder.iterdir() if folder.is_dir() else ()
        out[group] = sorted(f.name[:-len(".yaml")] for f in files if f.name.endswith(".yaml"))
    return out


def split_args(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """Separate ``group=option`` choices from the other (Hydra) overrides, keeping their order."""
    choices: dict[str, str] = {}
    overrides: list[str] = []
    for arg in args:
        key, sep, value = arg.partition("=")
        if sep and key in GROUPS:
            choices.pop(key, None)  # the last one wins and takes its place in the order
            choices[key] = value
        else:
            overrides.append(arg)
    return choices, overrides


def render(value: Any) -> str:
    """A YAML value in Hydra override syntax (also what OmegaConf.from_dotlist reads back)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return value if _PLAIN.fullmatch(value) and value.lower() not in _KEYWORDS else _quote(value)
    if isinstance(value, list):
        return "[" + ",".join(render(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{_key(k)}:{render(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {type(value).__name__} {value!r} as an override value")


def _quote(text: str) -> str:
    """Single-quoted Hydra string: ``${`` is escaped for OmegaConf (no interpolation); Hydra
    un-escapes backslashes only before a quote or the closing quote, so only those double."""
    text = text.replace("${", "\\${")
    text = re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", text)
    text = re.sub(r"(\\+)$", lambda m: m.group(1) * 2, text)
    return f"'{text}'"


def _key(key: Any) -> str:
    if not (isinstance(key, str) and _PLAIN.fullmatch(key)):
        raise TypeError(f"config key {key!r} must be a plain name ([A-Za-z_][A-Za-z0-9_-]*)")
    return key


def _flatten(tree: dict, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of a nested mapping as (dotted key, value), in file order; an empty mapping is
    a leaf."""
    for key, value in tree.items():
        path = f"{prefix}{_key(key)}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, path + ".")
        else:
            yield path, value


def load_option(group: str, option: str) -> list[str]:
    """The overrides of one option file (``group/option.yaml``)."""
    text = (_conf_dir() / group / f"{option}.yaml").read_text(encoding="utf-8")
    tree = OmegaConf.to_container(OmegaConf.create(text), resolve=True) if text.strip() else {}
    if not isinstance(tree, dict):
        raise TypeError(f"must hold a mapping rooted at the job config, not {type(tree).__name__}")
    return [f"{key}={render(value)}" for key, value in _flatten(tree)]


def compose(choices: dict[str, str]) -> list[str]:
    """The dotted ``key=value`` overrides of the chosen options, in GROUPS order."""
    groups = available_groups()
    problems = [f"unknown config group `{g}`; the groups are {', '.join(GROUPS)}."
                for g in choices if g not in groups]
    problems += [f"`{g}={o}`: no such option; the options of `{g}` are {', '.join(groups[g]) or '(none)'}."
                 for g, o in choices.items() if g in groups and o not in groups[g]]
    if problems:
        raise _error(problems)
    out: list[str] = []
    for group in GROUPS:
        if group in choices:
            try:
                out += load_option(group, choices[group])
            except Exception as err:  # a broken file: name it
                problems.append(f"config group file {group}/{choices[group]}.yaml: {err}")
    if problems:
        raise _error(problems)
    return out


def expand_args(args: list[str]) -> list[str]:
    """Command-line arguments -> overrides for Bridge: the group files' first, then the user's."""
    choices, overrides = split_args(args)
    return compose(choices) + overrides
