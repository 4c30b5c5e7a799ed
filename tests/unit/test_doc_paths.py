"""Every repository path that the README, the docs or a docstring names exists: a user has only
the repository, so a pointer to a file that is not there is a broken promise."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PATH_RE = re.compile(r"(?<![\w./-])((?:docs|rlpt_plugin|tests|bench|examples)/[\w./-]*\w)")
SOURCES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")),
           *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "rlpt_plugin").rglob("*.py"))]


def named_paths(text: str) -> set[str]:
    out = set()
    for match in PATH_RE.finditer(text):
        path = match.group(1).rstrip(".")
        if "*" in path or "<" in path or path.endswith("/"):
            continue
        out.add(path)
    return out


def test_every_named_path_exists():
    missing = {}
    for source in SOURCES:
        for path in named_paths((ROOT / source).read_text()):
            if not (ROOT / path).exists():
                missing.setdefault(source, []).append(path)
    assert not missing, missing


def test_the_checker_sees_a_missing_path():
    assert named_paths("see docs/NOPE.md and rlpt_plugin/rl/losses.py.") == {"docs/NOPE.md", "rlpt_plugin/rl/losses.py"}
