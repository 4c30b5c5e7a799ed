"""A real HTTP server on 127.0.0.1 speaking the OpenAI protocol, with programmable faults.

``ThreadingHTTPServer`` in a background thread, port 0. Answers are a deterministic function of
the request (``responder``). Faults are chosen per request by ``plan(body, seen)`` where ``seen``
counts earlier requests with the same content: that makes "the first two attempts of *this*
request fail" deterministic under concurrency. The server stops on ``__exit__`` and, as a guard
against a forgotten teardown, by itself after ``max_lifetime_s``.

With ``api_key`` set, every request must carry ``Authorization: Bearer <api_key>``; others get
401 with an OpenAI-style error body. A wrong key is quoted back in that body, as careless
servers do, so tests can prove the client never lets it through. ``open_connections`` counts
the TCP connections currently open, so tests can see a client really close its pool.
"""

from __future__ import annotations

import enum
import hashlib
import json
import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FaultKind(enum.StrEnum):
    HTTP_500 = "http_500"
    HTTP_503 = "http_503"
    HTTP_429 = "http_429"
    HTTP_400 = "http_400"
    HANG = "hang"  # sleep past the client's timeout, then answer (to nobody)
    TRUNCATED_JSON = "truncated_json"
    NO_CHOICES = "no_choices"
    REFUSAL = "refusal"
    SLOW = "slow"  # sleep, then answer normally
    RESET = "reset"  # close the socket with RST, no response
    EMPTY_TEXT = "empty_text"


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    delay_s: float = 0.0
    message: str | None = None  # error body message for HTTP_* faults (default "injected <status>")


REFUSAL_TEXT = "I'm sorry, but I can't help with that."


@dataclass(frozen=True)
class Reply:
    """A chat answer as a reasoning model's server sends it (vLLM with a reasoning parser):
    ``content`` the answer (None is sent as JSON null), the thinking in the field named
    ``reasoning_field`` (vLLM: ``reasoning_content``, newer releases ``reasoning``)."""

    content: str | None
    reasoning: str | None = None
    finish_reason: str = "stop"
    reasoning_field: str = "reasoning_content"


Plan = Callable[[dict[str, Any], int], "Fault | None"]
Responder = Callable[[dict[str, Any]], "str | Reply"]


def request_key(body: dict[str, Any]) -> str:
    """Content identity of a request (what the client retries), independent of endpoint."""
    content = {k: body.get(k) for k in ("messages", "prompt", "max_tokens", "temperature", "seed")}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def default_responder(body: dict[str, Any]) -> str:
    """Chat: 'reply to: <last user content>'; completions: 'continuation of: <prompt>'."""
    if "messages" in body:
        users = [m["content"] for m in body["messages"] if m.get("role") == "user"]
        return "reply to: " + (users[-1] if users else "")
    return "continuation of: " + str(body.get("prompt", ""))


def fail_first(n: int, fault: Fault, match: str | None = None) -> Plan:
    """The first ``n`` attempts of each request (whose JSON contains ``match``) get ``fault``."""

    def plan(body: dict[str, Any], seen: int) -> Fault | None:
        if match is not None and match not in json.dumps(body):
            return None
        return fault if seen < n else None

    return plan


def always(fault: Fault, match: str | None = None) -> Plan:
    """Every request (whose JSON contains ``match``) gets ``fault``."""
    return fail_first(10**9, fault, match)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, like real servers; every reply sets Content-Length

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # keep test output clean

    def setup(self) -> None:
        super().setup()
        with self.server.lock:
            self.server.open_connections += 1

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.lock:
                self.server.open_connections -= 1

    def _authorized(self) -> bool:
        """True when no key is required or the right one was sent; else answers 401."""
        want = self.server.api_key
        if want is None:
            return True
        sent = self.headers.get("Authorization")
        if sent == f"Bearer {want}":
            return True
        if sent is None:
            msg = "Missing API key: send the header 'Authorization: Bearer <key>'"
        else:
            msg = f"Incorrect API key provided: {sent.removeprefix('Bearer ')}"
        self._send(401, json.dumps({"error": {"message": msg, "type": "invalid_request_error",
                                              "code": "invalid_api_key"}}).encode())
        return False

    def _leave_flight(self) -> None:
        """Leave the in-flight count *before* the client can see the answer: otherwise its next
        request could be counted while this one still is, overstating concurrency."""
        if self._in_flight:
            self._in_flight = False
            with self.server.lock:
                self.server.in_flight -= 1

    def _send(self, status: int, payload: bytes, headers: dict[str, str] | None = None) -> None:
        self._leave_flight()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def _answer(self, body: dict[str, Any], text: str | Reply, chat: bool) -> bytes:
        reply = text if isinstance(text, Reply) else Reply(text)
        choice: dict[str, Any] = {"index": 0, "finish_reason": reply.finish_reason}
        if chat:
            choice["message"] = {"role": "assistant", "content": reply.content}
            if reply.reasoning is not None:
                choice["message"][reply.reasoning_field] = reply.reasoning
        else:
            choice["text"] = reply.content
        obj = "chat.completion" if chat else "text_completion"
        return json.dumps({"id": "cmpl-loopback", "object": obj, "model": body.get("model"),
                           "choices": [choice]}).encode()  # fmt: skip

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        srv = self.server
        self._in_flight = False
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        path = self.path.partition("?")[0]  # a base URL may carry a query (?key=...)
        chat = path == "/v1/chat/completions"
        if path not in ("/v1/chat/completions", "/v1/completions"):
            self._send(404, json.dumps({"error": {"message": f"no route {path}"}}).encode())
            return
        body = json.loads(raw)
        key = request_key(body)
        with srv.lock:
            srv.auth_headers.append(self.headers.get("Authorization"))
        if not self._authorized():
            return
        with srv.lock:
            srv.counts[path] += 1
            srv.bodies.append(body)
            seen = srv.seen[key]
            srv.seen[key] += 1
            srv.in_flight += 1
            srv.max_in_flight = max(srv.max_in_flight, srv.in_flight)
        self._in_flight = True
        try:
            self._handle(body, chat, srv.plan(body, seen) if srv.plan else None)
        finally:
            self._leave_flight()

    def _handle(self, body: dict[str, Any], chat: bool, fault: Fault | None) -> None:
        srv = self.server
        if srv.base_delay_s:
            srv.stopping.wait(srv.base_delay_s)
        kind = fault.kind if fault else None
        if kind in (FaultKind.HTTP_500, FaultKind.HTTP_503, FaultKind.HTTP_429, FaultKind.HTTP_400):
            status = int(kind.value.split("_")[1])
            text = fault.message if fault and fault.message is not None else f"injected {status}"
            msg = json.dumps({"error": {"message": text, "code": status}}).encode()
            self._send(status, msg, {"Retry-After": "0"} if status == 429 else None)
            return
        if kind is FaultKind.RESET:
            # SO_LINGER(on, 0) makes close() send RST instead of FIN: a reset, not a clean close.
            self._leave_flight()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return
        if kind in (FaultKind.HANG, FaultKind.SLOW):
            srv.stopping.wait(fault.delay_s if fault else 0.0)  # woken early by shutdown
        if kind is FaultKind.NO_CHOICES:
            self._send(200, json.dumps({"id": "cmpl-loopback", "object": "error"}).encode())
            return
        text = {FaultKind.REFUSAL: REFUSAL_TEXT, FaultKind.EMPTY_TEXT: ""}.get(kind) if kind else None
        payload = self._answer(body, srv.responder(body) if text is None else text, chat)
        if kind is FaultKind.TRUNCATED_JSON:
            payload = payload[: len(payload) // 2]  # Content-Length matches: valid HTTP, bad JSON
        try:
            self._send(200, payload)
        except OSError:
            self.close_connection = True  # the client gave up (hang): nothing to do


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops bursts of connects (1 s SYN retry)
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # resets and abandoned connections are expected here


class LoopbackServer:
    """Context manager running an OpenAI-protocol server; ``base_url`` ends in ``/v1``."""

    def __init__(self, responder: Responder = default_responder, plan: Plan | None = None,
                 base_delay_s: float = 0.0, max_lifetime_s: float = 60.0,
                 api_key: str | None = None) -> None:  # fmt: skip
        self._server = _Server(("127.0.0.1", 0), _Handler)
        srv = self._server
        srv.api_key = api_key  # type: ignore[attr-defined]
        srv.auth_headers = []  # type: ignore[attr-defined]
        srv.open_connections = 0  # type: ignore[attr-defined]
        srv.responder = responder  # type: ignore[attr-defined]
        srv.plan = plan  # type: ignore[attr-defined]
        srv.base_delay_s = base_delay_s  # type: ignore[attr-defined]
        srv.lock = threading.Lock()  # type: ignore[attr-defined]
        srv.counts = Counter()  # type: ignore[attr-defined]
        srv.seen = Counter()  # type: ignore[attr-defined]
        srv.bodies = []  # type: ignore[attr-defined]
        srv.in_flight = 0  # type: ignore[attr-defined]
        srv.max_in_flight = 0  # type: ignore[attr-defined]
        srv.stopping = threading.Event()  # type: ignore[attr-defined]
        self._thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._watchdog = threading.Timer(max_lifetime_s, self.stop)
        self._watchdog.daemon = True
        self._stopped = False

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def counts(self) -> Counter:
        """Requests received per path (``/v1/chat/completions``, ``/v1/completions``)."""
        return self._server.counts  # type: ignore[attr-defined]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return self._server.bodies  # type: ignore[attr-defined]

    @property
    def auth_headers(self) -> list[str | None]:
        """The Authorization header of every request received (None when absent), in order."""
        return self._server.auth_headers  # type: ignore[attr-defined]

    @property
    def open_connections(self) -> int:
        """TCP connections open right now (a closed client pool brings this to 0)."""
        return self._server.open_connections  # type: ignore[attr-defined]

    @property
    def max_in_flight(self) -> int:
        return self._server.max_in_flight  # type: ignore[attr-defined]

    def set_plan(self, plan: Plan | None) -> None:
        self._server.plan = plan  # type: ignore[attr-defined]

    def start(self) -> LoopbackServer:
        self._thread.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._watchdog.cancel()
        self._server.stopping.set()  # type: ignore[attr-defined]  # wake hanging handlers
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5.0)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
