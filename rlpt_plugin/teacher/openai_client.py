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
  ``ok`` result with ``text == ""``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx

from rlpt_plugin.teacher.protocol import GenerationRequest, GenerationResult, GenerationStatus

EndpointKind = Literal["chat", "completions"]
_DETAIL_CHARS = 200  # server messages are quoted in errors, but not whole HTML error pages


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
    """The server's own error message when it sent OpenAI-style JSON, else the raw body."""
    try:
        body = resp.json()
        err = body.get("error") if isinstance(body, dict) else None
        if isinstance(err, dict) and err.get("message"):
            return _short(str(err["message"]))
        if isinstance(err, str) and err:
            return _short(err)
    except (ValueError, UnicodeDecodeError):
        pass
    return _short(resp.text)


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None  # HTTP-date form: ignore, the exponential backoff applies


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
            raise ValueError(f"endpoints must be a non-empty sequence of base URLs, got {endpoints!r}")
        for i, url in enumerate(endpoints):
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                raise ValueError(f"endpoints[{i}] must be an http(s):// base URL, got {url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"model must be a non-empty string, got {model!r}")
        if endpoint_kind not in ("chat", "completions"):
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
        self._next_endpoint = 0
        # httpx pools and asyncio semaphores belong to one event loop; they are (re)made lazily
        # for the loop that calls generate(), so a client survives several asyncio.run() calls.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._http: httpx.AsyncClient | None = None
        self._sem: asyncio.Semaphore | None = None
        self._counters = {"requests": 0, "attempts": 0, "retries": 0, "failures": 0}
        self._latency_total_s = 0.0

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
        """Close the HTTP connection pool (if it belongs to the running loop)."""
        if self._http is not None and self._loop is asyncio.get_running_loop():
            await self._http.aclose()
        self._http, self._sem, self._loop = None, None, None

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

    def _parse(self, resp: httpx.Response, chat: bool) -> tuple[str, str | None] | _AttemptError:
        try:
            payload = json.loads(resp.content)
        except (ValueError, UnicodeDecodeError) as exc:
            return _AttemptError("malformed JSON response", _short(f"{exc}; body starts {resp.text[:80]!r}"), True)
        choices = payload.get("choices") if isinstance(payload, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
            return _AttemptError("response without choices[0]", _short(resp.text), True)
        choice = choices[0]
        if chat:
            message = choice.get("message")
            text = message.get("content") if isinstance(message, dict) else None
        else:
            text = choice.get("text")
        if not isinstance(text, str):
            where = "message.content" if chat else "text"
            return _AttemptError(f"response without choices[0].{where}", _short(resp.text), True)
        finish = choice.get("finish_reason")
        return text, finish if isinstance(finish, str) else None

    async def _attempt(self, url: str, body: dict[str, Any], chat: bool) -> tuple[str, str | None] | _AttemptError:
        assert self._http is not None
        try:
            resp = await asyncio.wait_for(self._http.post(url, json=body), timeout=self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            return _AttemptError(f"timeout after {self.timeout_s:g}s", url, True)
        except httpx.TransportError as exc:  # refused, reset, closed mid-response, DNS, ...
            return _AttemptError("connection error", _short(f"{type(exc).__name__}: {exc} ({url})"), True)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # e.g. redirect loops: retrying cannot help
            return _AttemptError("HTTP client error", _short(f"{type(exc).__name__}: {exc} ({url})"), False)
        if resp.status_code == 429 or resp.status_code >= 500:
            return _AttemptError(f"HTTP {resp.status_code}", _server_message(resp), True, _retry_after(resp))
        if resp.status_code != 200:
            return _AttemptError(f"HTTP {resp.status_code}", _server_message(resp), False)
        return self._parse(resp, chat)

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
            url = self.endpoints[(start_index + attempt - 1) % len(self.endpoints)] + path
            async with self._sem:
                attempts = attempt
                self._counters["attempts"] += 1
                outcome = await self._attempt(url, body, req.is_chat)
            if not isinstance(outcome, _AttemptError):
                latency = time.perf_counter() - t0
                self._counters["requests"] += 1
                self._latency_total_s += latency
                text, finish = outcome
                return GenerationResult(req.request_id, GenerationStatus.OK, text, finish, None, attempts, latency)
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
