"""Async client for teacher servers speaking the OpenAI HTTP protocol (vLLM, SGLang, TGI, ...).

Design points:

* a *pool* of endpoints; a request's first attempt goes to the next endpoint round-robin and each
  retry moves on to the following one, so one dead replica costs a retry, not a failure;
* bounded concurrency with an ``asyncio.Semaphore`` (the servers batch internally; the bound
  protects them and our sockets);
* retries with exponential backoff and *deterministic* jitter (seeded from the request id, so
  two runs of the same job behave the same) on transient errors only: connection errors,
  timeouts, 5xx, 429 and malformed 2xx bodies. Other 4xx mean the request itself is wrong, and
  retrying cannot help;
* every outcome is explicit: a ``failed`` result says why; an empty string from the server is an
  ``ok`` result with ``text == ""``;
* credentials stay secret: the API key travels only in the ``Authorization`` header; every URL
  and server message that reaches an error string, ``repr`` or :meth:`OpenAIClient.describe`
  goes through :mod:`rlpt_plugin.teacher.redact` (URL userinfo and key-like query parameters
  masked, the key itself masked should a server echo it back).

Logging: httpx logs one INFO line per request, with the full URL (query string included). At
paper scale that is thousands of console lines per step, and a key in a query string would be
printed with each. The constructor therefore raises the ``httpx`` and ``httpcore`` loggers to
WARNING, but only while their level is unset (NOTSET): a user who set either logger's level
explicitly, before or after, keeps it. To see the request lines again:
``logging.getLogger("httpx").setLevel(logging.INFO)``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from rlpt_plugin.teacher.protocol import (ENDPOINT_KINDS, GenerationRequest, GenerationResult, GenerationStatus,
                                          StructuredOutput)
from rlpt_plugin.teacher.redact import redact_text, redact_url

EndpointKind = Literal["chat", "completions"]
_DETAIL_CHARS = 200  # server messages are quoted in errors, but not whole HTML error pages
# Raw text is cut to this before redaction and to _DETAIL_CHARS after it: cutting first at 200
# could split an echoed key or URL so that the redactor no longer recognises it.
_RAW_CHARS = 4000
_log = logging.getLogger(__name__)
_CHATTY_LOGGERS = ("httpx", "httpcore")  # INFO / DEBUG line per request (see module docstring)


def quiet_http_loggers() -> None:
    """Raise the httpx / httpcore loggers to WARNING unless someone set their level already."""
    for name in _CHATTY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)


@dataclass(frozen=True)
class _AttemptError:
    """Why one attempt failed; ``retryable`` decides whether another attempt is made."""

    kind: str  # short, stable: "HTTP 503", "timeout after 2.0s", "malformed JSON response"
    detail: str
    retryable: bool
    retry_after_s: float | None = None


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _DETAIL_CHARS else text[:_DETAIL_CHARS] + "..."


def _server_message(resp: httpx.Response) -> str:
    """The server's own error message when it sent OpenAI-style JSON, else the raw body
    (uncut up to ``_RAW_CHARS``: the caller redacts, then shortens)."""
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:_RAW_CHARS]
        if isinstance(err, str) and err:
            return err[:_RAW_CHARS]
    except (ValueError, UnicodeDecodeError):
        pass
    return resp.text[:_RAW_CHARS]


def _join(base: str, path: str) -> str:
    """``base`` + ``path``, keeping a query string of ``base`` (``...?key=K``) at the end."""
    head, sep, query = base.partition("?")
    return head.rstrip("/") + path + sep + query


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # HTTP-date form: ignore, the exponential backoff applies


def _structured_fields(fmt: StructuredOutput, chat: bool) -> dict[str, Any]:
    """The request-body fields that ask the server for ``fmt`` (see StructuredOutput)."""
    schema = json.loads(fmt.schema)
    if fmt.kind == "json_schema":
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": fmt.name, "schema": schema, "strict": True}}}
    if fmt.kind == "json_object":
        if not chat:
            raise ValueError("structured output 'json_object' is a chat-route field; use 'grammar' or "
                             "'json_schema' on a completions endpoint")
        return {"response_format": {"type": "json_object", "schema": schema}}
    return {"grammar": fmt.grammar}


class OpenAIClient:
    """``TeacherClient`` over a pool of OpenAI-protocol endpoints (base URLs ending in ``/v1``)."""

    def __init__(
        self,
        endpoints: Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        endpoint_kind: EndpointKind = "chat",
        max_concurrency: int = 32,
        timeout_s: float = 60.0,
        max_attempts: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 8.0,
    ) -> None:
        if isinstance(endpoints, str) or not endpoints:
            shown = redact_url(endpoints) if isinstance(endpoints, str) else endpoints
            raise ValueError(f"endpoints must be a non-empty sequence of base URLs, got {shown!r}")
        for i, url in enumerate(endpoints):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                shown = redact_url(url) if isinstance(url, str) else url
                raise ValueError(f"endpoints[{i}] must be an http(s):// base URL, got {shown!r}")
        if api_key is not None and (not isinstance(api_key, str) or not api_key
                                    or any(c.isspace() or not c.isprintable() for c in api_key)):
            # Describe the value, never quote it: this message may end up in a log.
            what = (f"a {type(api_key).__name__}" if not isinstance(api_key, str) else
                    "an empty string" if not api_key else
                    f"a string of {len(api_key)} characters with whitespace or control characters")
            raise ValueError(f"api_key must be None or a non-empty string without whitespace, got {what}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if endpoint_kind not in ENDPOINT_KINDS:
            raise ValueError(f"endpoint_kind must be 'chat' or 'completions', got {endpoint_kind!r}")
        if isinstance(max_concurrency, bool) or not isinstance(max_concurrency, int) or max_concurrency < 1:
            raise ValueError(f"max_concurrency must be an int >= 1, got {max_concurrency!r}")
        if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {max_attempts!r}")
        for name, value in (("timeout_s", timeout_s), ("backoff_s", backoff_s), ("backoff_max_s", backoff_max_s)):
            if not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.endpoints = tuple(url.rstrip("/") for url in endpoints)
        self.model = model
        self.model_id = model
        self.endpoint_kind: EndpointKind = endpoint_kind
        self.max_concurrency = max_concurrency
        self.timeout_s = float(timeout_s)
        self.max_attempts = max_attempts
        self.backoff_s = float(backoff_s)
        self.backoff_max_s = float(backoff_max_s)
        self._headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._secrets: tuple[str, ...] = (api_key,) if api_key else ()
        self._next_endpoint = 0
        # httpx pools and asyncio semaphores belong to one event loop; they are (re)made lazily
        # for the loop that calls generate(), so a client survives several asyncio.run() calls.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._counters = {"requests": 0, "attempts": 0, "retries": 0, "failures": 0}
        self._latency_total_s = 0.0
        quiet_http_loggers()

    def __repr__(self) -> str:
        return (f"OpenAIClient(endpoints={[redact_url(u) for u in self.endpoints]!r}, model={self.model!r}, "
                f"endpoint_kind={self.endpoint_kind!r}, api_key={'<set>' if self._secrets else None})")

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings for manifests and run records: URLs redacted, the key never shown."""
        return {"endpoints": [redact_url(u) for u in self.endpoints], "model": self.model,
                "endpoint_kind": self.endpoint_kind, "api_key": "<set>" if self._secrets else None,
                "timeout_s": self.timeout_s, "max_attempts": self.max_attempts}

    # -- public API -------------------------------------------------------------------------

    async def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Answer ``requests`` concurrently; results in request order, failures as records."""
        want_chat = self.endpoint_kind == "chat"
        for i, req in enumerate(requests):
            if req.is_chat != want_chat:
                # A configuration error, not a transient one: refuse before sending anything.
                raise ValueError(
                    f"requests[{i}] ({req.request_id!r}) is a {'chat' if req.is_chat else 'completions'} "
                    f"request but endpoint_kind is {self.endpoint_kind!r}"
                )
        self._ensure_loop_state()
        return list(await asyncio.gather(*(self._one(req) for req in requests)))

    async def aclose(self) -> None:
        """Close the HTTP connection pool; idempotent, and a later ``generate`` opens a new one.

        Call it from the event loop that ran ``generate`` (e.g. the judge's loop thread). From
        another loop it still closes the pool, on its own loop when that loop is running in
        another thread; a pool whose loop has already stopped is only dropped (its sockets
        cannot be used or closed from here, and die with that loop).
        """
        http, owner = self._http, self._loop
        # Forget the pool before awaiting anything, so a concurrent or repeated call is a no-op.
        self._http, self._sem, self._loop = None, None, None
        if http is None:
            return
        if owner is asyncio.get_running_loop():
            await http.aclose()
        elif owner is not None and owner.is_running() and not owner.is_closed():
            future = asyncio.run_coroutine_threadsafe(http.aclose(), owner)
            try:
                await asyncio.wait_for(asyncio.wrap_future(future), timeout=self.timeout_s)
            except asyncio.TimeoutError:
                # Shutdown must not fail the run: the pool is dropped, its loop closes it later.
                _log.warning("OpenAIClient.aclose: the HTTP pool's event loop did not close it within "
                             "%gs; dropped it", self.timeout_s)

    def stats(self) -> dict[str, float]:
        """Counters since construction: requests, attempts, retries, failures, latency."""
        out: dict[str, float] = dict(self._counters)
        out["total_latency_s"] = self._latency_total_s
        out["mean_latency_s"] = self._latency_total_s / self._counters["requests"] if self._counters["requests"] else 0.0
        return out

    # -- internals --------------------------------------------------------------------------

    def _ensure_loop_state(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is loop and self._http is not None:
            return
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        # The per-attempt deadline is enforced by asyncio.wait_for (total time, not per read);
        # httpx's own timeout is a backstop slightly above it.
        self._http = httpx.AsyncClient(limits=limits, timeout=self.timeout_s * 1.5 + 1.0, headers=self._headers)
        self._sem = asyncio.Semaphore(self.max_concurrency)
        self._loop = loop

    def _backoff(self, request_id: str, attempt: int, retry_after_s: float | None) -> float:
        """Delay before attempt ``attempt + 1``: exponential, capped, jitter in [0.5, 1.0)."""
        base = min(self.backoff_max_s, self.backoff_s * (2 ** (attempt - 1)))
        digest = hashlib.sha256(f"{request_id}\x00{attempt}".encode()).digest()
        jitter = 0.5 + 0.5 * random.Random(digest).random()
        delay = base * jitter
        if retry_after_s is not None:  # the server asked for a pause (429); honour it, capped
            delay = max(delay, min(retry_after_s, self.backoff_max_s))
        return delay

    def _body(self, req: GenerationRequest) -> tuple[str, dict[str, Any]]:
        p = req.params
        body: dict[str, Any] = {"model": self.model, "temperature": p.temperature, "top_p": p.top_p,
                                "max_tokens": p.max_tokens}  # fmt: skip
        if p.seed is not None:
            body["seed"] = p.seed
        if p.stop:
            body["stop"] = list(p.stop)
        if p.structured is not None:
            body.update(_structured_fields(p.structured, req.messages is not None))
        if req.messages is not None:
            messages = [{"role": r, "content": c} for r, c in req.messages]
            if req.assistant_prefix:
                # vLLM's extension: continue the final assistant message instead of opening a
                # new turn, so the answer flows on from the primed words.
                messages.append({"role": "assistant", "content": req.assistant_prefix})
                body["continue_final_message"] = True
                body["add_generation_prompt"] = False
            body["messages"] = messages
            return "/chat/completions", body
        body["prompt"] = (req.prompt or "") + req.assistant_prefix
        return "/completions", body

    def _parse(self, resp: httpx.Response, chat: bool) -> tuple[str, str | None, str | None] | _AttemptError:
        try:
            payload = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            return _AttemptError("malformed JSON response", f"{exc}; body starts {resp.text[:_RAW_CHARS]!r}", True)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return _AttemptError("response without choices[0]", resp.text[:_RAW_CHARS], True)
        choice = choices[0]
        reasoning = None
        if chat:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
            if isinstance(message, dict):
                # vLLM's reasoning parsers (gpt-oss, DeepSeek-R1, Qwen3) put the thinking beside
                # the answer: ``reasoning_content`` (older releases) or ``reasoning``. The answer
                # is ``content`` only; when the budget ran out while thinking it is null or "".
                for name in ("reasoning_content", "reasoning"):
                    if isinstance(message.get(name), str) and message[name]:
                        reasoning = message[name]
                        break
                if text is None and reasoning is not None:
                    text = ""
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            where = "message.content" if chat else "text"
            return _AttemptError(f"response without choices[0].{where}", resp.text[:_RAW_CHARS], True)
        finish = choice.get("finish_reason")
        return text, finish if isinstance(finish, str) else None, reasoning

    async def _attempt(self, url: str, body: dict[str, Any],
                       chat: bool) -> tuple[str, str | None, str | None] | _AttemptError:
        assert self._http is not None
        try:
            resp = await asyncio.wait_for(self._http.post(url, json=body), timeout=self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return _AttemptError(f"timeout after {self.timeout_s:g}s", self._clean(url), True)
        except httpx.TransportError as exc:  # refused, reset, closed mid-response, DNS, ...
            return _AttemptError("connection error", self._clean(f"{type(exc).__name__}: {exc} ({url})"), True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. redirect loops: retrying cannot help
            return _AttemptError("HTTP client error", self._clean(f"{type(exc).__name__}: {exc} ({url})"), False)
        if resp.status_code == 429 or resp.status_code >= 500:
            return _AttemptError(f"HTTP {resp.status_code}", self._clean(_server_message(resp)), True,
                                 _retry_after(resp))
        if resp.status_code != 200:
            return _AttemptError(f"HTTP {resp.status_code}", self._clean(_server_message(resp)), False)
        outcome = self._parse(resp, chat)
        if isinstance(outcome, _AttemptError):
            return dataclasses.replace(outcome, detail=self._clean(outcome.detail))
        return outcome

    def _clean(self, text: str) -> str:
        """``text`` fit for an error string: URLs redacted, the API key masked, length capped."""
        return _short(redact_text(text, self._secrets))

    async def _one(self, req: GenerationRequest) -> GenerationResult:
        assert self._sem is not None
        path, body = self._body(req)
        start_index = self._next_endpoint
        self._next_endpoint = (self._next_endpoint + 1) % len(self.endpoints)
        t0 = time.perf_counter()
        last: _AttemptError | None = None
        attempts = 0
        for attempt in range(1, self.max_attempts + 1):
            if attempt > 1:
                self._counters["retries"] += 1
                # Sleep outside the semaphore so a backing-off request does not hold a slot.
                await asyncio.sleep(self._backoff(req.request_id, attempt - 1, last.retry_after_s if last else None))
            url = _join(self.endpoints[(start_index + attempt - 1) % len(self.endpoints)], path)
            async with self._sem:
                attempts = attempt
                self._counters["attempts"] += 1
                outcome = await self._attempt(url, body, req.is_chat)
            if not isinstance(outcome, _AttemptError):
                latency = time.perf_counter() - t0
                self._counters["requests"] += 1
                self._latency_total_s += latency
                text, finish, reasoning = outcome
                return GenerationResult(req.request_id, GenerationStatus.OK, text, finish, None, attempts, latency,
                                        reasoning=reasoning)
            last = outcome
            if not outcome.retryable:
                break
        assert last is not None
        latency = time.perf_counter() - t0
        self._counters["requests"] += 1
        self._counters["failures"] += 1
        self._latency_total_s += latency
        error = f"{last.kind} ({attempts} attempt{'s' if attempts != 1 else ''})"
        if last.detail:
            error += f": {last.detail}"
        return GenerationResult.failure(req.request_id, error, attempts, latency)
