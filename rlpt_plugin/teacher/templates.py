"""Versioned prompt templates for the teacher, stored as text files under ``prompts/``.

File format::

    version: rewrite-v1
    kind: chat
    prime_words: 5
    ### system
    ... text with {prefix}, {suffix}, {num_words} ...
    ### user
    ...

Header lines are ``key: value`` with ``version`` and ``kind`` required and ``prime_words``
(how many trailing prefix words prime the answer, default 5) and ``placeholders`` optional; lines
starting with ``#`` before the first section are comments. ``kind: chat`` takes an optional
``### system`` and a required ``### user`` section; ``kind: completions`` takes one
``### prompt`` section.

By default a template uses exactly the rewrite placeholders ``{prefix}``, ``{suffix}`` and
``{num_words}`` and is filled with :meth:`Template.render`. A template may instead declare its
own set, e.g. ``placeholders: prefix, candidate_a, candidate_b`` (the judge prompts do); it is
then filled with :meth:`Template.fill`, which takes exactly those names. Either way every
declared placeholder must be used and any other ``{identifier}`` is rejected as a probable
typo, while other braces (JSON examples, code) are left alone. Substitution is a single pass,
so a document that itself contains ``{suffix}`` is not expanded twice.

A chat template can also be rendered for a completions endpoint (``render(..., kind=
"completions")``): its sections become one prompt, joined by blank lines and ending with a blank
line, and the client appends the priming words to it (see ``GenerationRequest``). So the text
the model continues is the instructions followed by the last words of the prefix, the same
words a chat server would continue from in the assistant turn. The cache keys of the two forms
differ (a prompt is not a message list), so they never share answers.

``Template.version`` is the header version plus a short sha256 of the whole file text: editing
the wording changes the version and therefore every cache key built with it, without anyone
having to remember to bump the header.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDERS = ("prefix", "suffix", "num_words")
_KINDS = {"chat": (("system", "user"), ("user",)), "completions": (("prompt",), ("prompt",))}
_HEADER_KEYS = ("version", "kind", "prime_words", "placeholders")
_IDENT_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PLACEHOLDER_RE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECTION_RE = re.compile(r"^###\s*(\S+)\s*$")
_WORD_RE = re.compile(r"\S+")


@dataclass(frozen=True)
class RenderedPrompt:
    """A filled template: ``messages`` (chat) or ``prompt`` (completions), and the priming text.

    ``num_words`` is the suffix word count for :meth:`Template.render`; :meth:`Template.fill`
    sets it to 0 and ``assistant_prefix`` to ``""`` (no priming).
    """

    messages: tuple[tuple[str, str], ...] | None
    prompt: str | None
    assistant_prefix: str
    num_words: int


@dataclass(frozen=True)
class Template:
    """A parsed prompt template; ``sections`` maps section name -> text with placeholders."""

    name: str
    header_version: str
    kind: str
    sections: tuple[tuple[str, str], ...]
    prime_words: int
    sha: str
    placeholders: tuple[str, ...] = PLACEHOLDERS

    @property
    def version(self) -> str:
        """Header version + short content hash; part of every cache key."""
        return f"{self.header_version}+{self.sha[:10]}"

    def _request_kind(self, kind: str | None) -> str:
        """The request kind to fill for (default: the template's); a completions template has no
        roles and cannot be sent as chat."""
        kind = self.kind if kind is None else kind
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {sorted(_KINDS)} or None, got {kind!r}")
        if kind == "chat" and self.kind != "chat":
            raise ValueError(f"template {self.name!r} is a completions template and cannot be rendered as "
                             "chat; use a chat template or endpoint kind 'completions'")
        return kind

    def render(self, prefix: str, suffix: str, *, kind: str | None = None) -> RenderedPrompt:
        """Fill the template for one window, as a ``kind`` request (default: the template's).

        ``num_words`` is the whitespace word count of ``suffix`` (at least 1, so the instruction
        never asks for zero words). ``assistant_prefix`` is the tail of ``prefix`` starting at its
        ``prime_words``-th last word, verbatim (spacing and newlines kept), so the continuation
        re-joins the document exactly where the original suffix began.

        ``kind="completions"`` on a chat template flattens it (module docstring); a completions
        template cannot be rendered as chat (it has no roles), which is a ValueError.
        """
        kind = self._request_kind(kind)
        if self.placeholders != PLACEHOLDERS:
            raise ValueError(
                f"template {self.name!r} declares its own placeholders {list(self.placeholders)}; "
                "fill it with Template.fill(), not render()"
            )
        if not isinstance(prefix, str):
            raise ValueError(f"prefix must be a string, got {type(prefix).__name__}")
        if not isinstance(suffix, str):
            raise ValueError(f"suffix must be a string, got {type(suffix).__name__}")
        num_words = max(1, len(suffix.split()))
        values = {"prefix": prefix, "suffix": suffix, "num_words": str(num_words)}
        filled = [(name, _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)) for name, text in self.sections]
        starts = [m.start() for m in _WORD_RE.finditer(prefix)]
        prime = prefix[starts[-self.prime_words]:] if len(starts) >= self.prime_words else prefix.lstrip()
        if kind == "chat":
            return RenderedPrompt(messages=tuple(filled), prompt=None, assistant_prefix=prime, num_words=num_words)
        if self.kind == "chat":  # flattened: the priming words follow the instructions
            prompt = "\n\n".join(text for _, text in filled) + "\n\n"
            return RenderedPrompt(messages=None, prompt=prompt, assistant_prefix=prime, num_words=num_words)
        return RenderedPrompt(messages=None, prompt=filled[0][1], assistant_prefix=prime, num_words=num_words)

    def fill(self, values: Mapping[str, str], *, kind: str | None = None) -> RenderedPrompt:
        """Fill every declared placeholder from ``values`` (exactly those keys, string values),
        as a ``kind`` request (default: the template's; a chat template is flattened for
        ``"completions"`` as in :meth:`render`).

        No priming: ``assistant_prefix`` is ``""`` and ``num_words`` 0. Single pass, like
        :meth:`render`, so a value containing ``{candidate}`` is left as it is.
        """
        kind = self._request_kind(kind)
        keys = set(values)
        if keys != set(self.placeholders):
            raise ValueError(
                f"values must have exactly the keys {sorted(self.placeholders)} of template {self.name!r}, "
                f"got {sorted(keys)}"
            )
        for key, value in values.items():
            if not isinstance(value, str):
                raise ValueError(f"values[{key!r}] must be a string, got {type(value).__name__}")
        filled = [(name, _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], text)) for name, text in self.sections]
        if kind == "chat":
            return RenderedPrompt(messages=tuple(filled), prompt=None, assistant_prefix="", num_words=0)
        if self.kind == "chat":  # flattened
            prompt = "\n\n".join(text for _, text in filled) + "\n\n"
            return RenderedPrompt(messages=None, prompt=prompt, assistant_prefix="", num_words=0)
        return RenderedPrompt(messages=None, prompt=filled[0][1], assistant_prefix="", num_words=0)


def parse_template(text: str, name: str = "<string>") -> Template:
    """Parse template file text; every problem is a ValueError naming ``name`` and the issue."""
    header: dict[str, str] = {}
    sections: list[tuple[str, list[str]]] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        match = _SECTION_RE.match(line)
        if match:
            sections.append((match.group(1), []))
        elif sections:
            sections[-1][1].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            key = key.strip()
            if not sep or key not in _HEADER_KEYS:
                raise ValueError(
                    f"template {name!r} line {lineno}: header lines must be 'key: value' with key in "
                    f"{list(_HEADER_KEYS)}, got {line!r}"
                )
            if key in header:
                raise ValueError(f"template {name!r} line {lineno}: header key {key!r} given twice")
            header[key] = value.strip()
    for key in ("version", "kind"):
        if not header.get(key):
            raise ValueError(f"template {name!r}: header must set {key!r}, got {header.get(key)!r}")
    kind = header["kind"]
    if kind not in _KINDS:
        raise ValueError(f"template {name!r}: kind must be one of {sorted(_KINDS)}, got {kind!r}")
    allowed, required = _KINDS[kind]
    prime_raw = header.get("prime_words", "5")
    if not prime_raw.isdigit() or int(prime_raw) < 1:
        raise ValueError(f"template {name!r}: prime_words must be an int >= 1, got {prime_raw!r}")
    placeholders = PLACEHOLDERS
    if "placeholders" in header:
        declared = tuple(p.strip() for p in header["placeholders"].split(","))
        if not declared or any(not _IDENT_RE.fullmatch(p) for p in declared):
            raise ValueError(
                f"template {name!r}: placeholders must be a comma-separated list of identifiers, "
                f"got {header['placeholders']!r}"
            )
        if len(set(declared)) != len(declared):
            raise ValueError(f"template {name!r}: placeholders lists a name twice, got {header['placeholders']!r}")
        placeholders = declared

    parsed: list[tuple[str, str]] = []
    for sec_name, lines in sections:
        if sec_name not in allowed:
            raise ValueError(f"template {name!r}: unknown section {sec_name!r} for kind {kind!r}; allowed {list(allowed)}")
        if any(sec_name == seen for seen, _ in parsed):
            raise ValueError(f"template {name!r}: section {sec_name!r} appears twice")
        body = "\n".join(lines).strip("\n")
        if not body.strip():
            raise ValueError(f"template {name!r}: section {sec_name!r} is empty")
        parsed.append((sec_name, body))
    present = [s for s, _ in parsed]
    for sec_name in required:
        if sec_name not in present:
            raise ValueError(f"template {name!r}: missing section {sec_name!r} (kind {kind!r}), got {present}")
    # Keep a canonical section order (system before user) whatever the file order.
    parsed.sort(key=lambda item: allowed.index(item[0]))

    used: set[str] = set()
    for sec_name, body in parsed:
        for match in _PLACEHOLDER_RE.finditer(body):
            if match.group(1) not in placeholders:
                raise ValueError(
                    f"template {name!r}: unknown placeholder {{{match.group(1)}}} in section {sec_name!r}; "
                    f"allowed {['{' + p + '}' for p in placeholders]}"
                )
            used.add(match.group(1))
    missing = [p for p in placeholders if p not in used]
    if missing:
        raise ValueError(f"template {name!r}: missing placeholders {['{' + p + '}' for p in missing]}")

    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return Template(name=name, header_version=header["version"], kind=kind, sections=tuple(parsed),
                    prime_words=int(prime_raw), sha=sha, placeholders=placeholders)  # fmt: skip


def load_template(name: str, *, directory: str | Path | None = None) -> Template:
    """Load ``<name>.txt`` from ``directory``, or from the packaged ``prompts/`` when None."""
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or name.endswith(".txt"):
        raise ValueError(f"name must be a template name like 'rewrite_v1' (no path, no .txt), got {name!r}")
    if directory is None:
        resource = resources.files("rlpt_plugin.teacher").joinpath("prompts", f"{name}.txt")
        if not resource.is_file():
            available = sorted(p.name[:-4] for p in resources.files("rlpt_plugin.teacher").joinpath("prompts").iterdir()
                               if p.name.endswith(".txt"))  # fmt: skip
            raise ValueError(f"name must be a packaged template, one of {available}, got {name!r}")
        text = resource.read_text(encoding="utf-8")
    else:
        path = Path(directory) / f"{name}.txt"
        if not path.is_file():
            raise ValueError(f"name must name a file {name}.txt in {str(directory)!r}, got {name!r} (not found)")
        text = path.read_text(encoding="utf-8")
    return parse_template(text, name=name)
