"""Keep credentials out of everything a person or a file sees: URLs and free text.

Endpoint URLs can carry credentials in two places: the userinfo (``https://user:pass@host``,
``https://TOKEN@host``) and query parameters (``?api_key=...``, ``&token=...``, signed URLs'
``sig``). :func:`redact_url` replaces those parts with ``***`` and leaves the rest verbatim, so
a redacted URL still says which host, port and path were meant. :func:`redact_text` does the
same for every URL inside a message (exception texts quote URLs) and also blanks out literal
secrets, such as an API key a server echoes back in its 401 body.

Both functions never raise: a redactor that fails on a malformed URL would turn the error
message it was cleaning into a crash that hides the original error.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import urlsplit, urlunsplit

MASK = "***"
# A query / fragment parameter whose (lower-cased, '-' -> '_') name contains one of these is a
# credential. Substring match on purpose: over-redacting "monkey=1" costs nothing, missing
# "x_goog_signature" leaks a credential.
_SECRET_NAME_PARTS = ("key", "token", "secret", "password", "passwd", "auth", "signature",
                      "credential", "session")
_SECRET_NAMES = frozenset({"sig", "pwd", "pass", "code"})
_URL_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_USERINFO_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")


def is_secret_name(name: str) -> bool:
    """True when a query parameter called ``name`` holds a credential (see module docstring)."""
    norm = name.strip().lower().replace("-", "_")
    return norm in _SECRET_NAMES or any(part in norm for part in _SECRET_NAME_PARTS)


def _redact_params(params: str) -> str:
    """``a=1&api_key=s`` -> ``a=1&api_key=***``; separators and order are kept."""
    out = []
    for piece in re.split(r"([&;])", params):
        name, sep, _ = piece.partition("=")
        out.append(f"{name}={MASK}" if sep and is_secret_name(name) else piece)
    return "".join(out)


def redact_url(url: str) -> str:
    """``url`` without credentials: userinfo -> ``***@``, secret query / fragment values -> ``***``.

    >>> redact_url("https://bob:pw@api.example.com/v1?api_key=s3cret&x=1")
    'https://***@api.example.com/v1?api_key=***&x=1'
    """
    if not isinstance(url, str):
        url = str(url)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            netloc = MASK + "@" + netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, _redact_params(parts.query),
                           _redact_params(parts.fragment) if "=" in parts.fragment else parts.fragment))
    except ValueError:
        # Malformed (e.g. an unclosed IPv6 bracket): fall back to plain pattern replacement.
        head, sep, tail = url.partition("?")
        return _USERINFO_RE.sub(lambda m: m.group(1) + MASK + "@", head) + sep + _redact_params(tail)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """``text`` with every URL in it redacted and every non-empty string of ``secrets`` masked.

    Secrets are masked first, longest first, so a key that is a substring of another key, or
    that also appears inside a URL, never survives in part.
    """
    if not isinstance(text, str):
        text = str(text)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return _URL_RE.sub(lambda m: redact_url(m.group(0)), text)
