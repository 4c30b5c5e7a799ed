"""Spawn N gloo processes from pytest (no torchrun) and collect what each returns.

Each worker: picks up MASTER_ADDR/PORT, RANK, WORLD_SIZE, uses one thread, applies the CPU
backend, initializes gloo, runs ``fn(rank, world_size, *args)`` and saves its return value to
``out_dir/rank{r}.pt``. Any exception is saved and re-raised in the parent with the worker's
traceback, so a failing worker fails the test with a readable message instead of a hang.

Workers are forked from a fork server that imported torch, megatron-core and Megatron-Bridge
once per test session (the ``forkserver`` start method with :data:`PRELOAD`): a fresh process
per worker, as with ``spawn``, without paying the imports every time (Bridge 0.6 alone takes
over 10 s to import on these CPUs). Nothing runs in the server but imports, so every worker
starts from the same clean state; the environment is the server's, so a test must not pass
settings to its workers through ``os.environ`` (pass them as arguments).
"""

from __future__ import annotations

import os
import socket
import traceback
from pathlib import Path
from typing import Any, Callable

import torch
import torch.multiprocessing as mp


#: Imported once by the fork server (import errors there are ignored: the worker imports again).
PRELOAD = ["torch", "megatron.core", "rlpt_plugin.megatron.host.bridge_host", "rlpt_plugin.megatron.host.cpu_backend"]
mp.set_forkserver_preload(PRELOAD)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, out_dir: str, fn: Callable[..., Any],
            args: tuple) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result: dict[str, Any]
    try:
        from rlpt_plugin.megatron.host.cpu_backend import enable_cpu_backend

        enable_cpu_backend()
        torch.distributed.init_process_group("gloo", rank=rank, world_size=world_size)
        result = {"ok": True, "value": fn(rank, world_size, *args)}
    except BaseException:  # noqa: BLE001 - reported to the parent verbatim
        result = {"ok": False, "error": traceback.format_exc()}
    torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def run_distributed(fn: Callable[..., Any], world_size: int, out_dir: Path, *args: Any) -> list[Any]:
    """Run ``fn`` on ``world_size`` gloo ranks; returns each rank's result, rank order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    mp.start_processes(_worker, args=(world_size, free_port(), str(out_dir), fn, args),
                       nprocs=world_size, join=True, start_method="forkserver")
    results = [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world_size)]
    errors = [f"--- rank {r} ---\n{res['error']}" for r, res in enumerate(results) if not res["ok"]]
    if errors:
        raise AssertionError("distributed worker failed:\n" + "\n".join(errors))
    return [res["value"] for res in results]
