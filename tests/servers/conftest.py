"""The server tier: llama.cpp's OpenAI-protocol server (llama-cpp-python[server]) on loopback,
serving a tiny random-weight model built offline (tests/servers/tiny_gguf.py).

Every test here is marked ``servers`` (``pytestmark = SERVERS``) and skips, with the reason,
when llama-cpp-python or gguf is not installed (``make test-servers`` installs the pinned version and runs the tier).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("RLPT_SERVERS_BUILD", ROOT / "build" / "servers"))
MODEL_ALIAS = "tiny-random-llama"
N_CTX = 8192
START_TIMEOUT_S = 180.0


MISSING = [name for name in ("llama_cpp", "gguf") if importlib.util.find_spec(name) is None]
SKIP_REASON = (f"{' and '.join(MISSING)} not installed: `make test-servers` installs llama-cpp-python[server] "
               "(the version pinned in the Makefile) and gguf, then runs this tier")
# Every module of the tier starts with: pytestmark = SERVERS (marked, and skipped with the reason).
SERVERS = [pytest.mark.servers, pytest.mark.skipif(bool(MISSING), reason=SKIP_REASON)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def tiny_model() -> Path:
    from tests.servers.tiny_gguf import build

    return build(BUILD)


@pytest.fixture(scope="session")
def llama_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL (``.../v1``) of a llama.cpp server on a free loopback port, for the session."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("llama_server") / "server.log"
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(tiny_model), "--model_alias", MODEL_ALIAS,
           "--host", "127.0.0.1", "--port", str(port), "--n_ctx", str(N_CTX), "--n_threads", "2",
           "--n_batch", "512", "--seed", "0"]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                if httpx.get(base + "/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"llama_cpp.server not up after {START_TIMEOUT_S:g}s:\n{log_path.read_text()[-4000:]}")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
