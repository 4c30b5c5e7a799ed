"""Run megatron-core (and Megatron-Bridge's `pretrain()`) on a machine without CUDA.

One entry point, :func:`enable_cpu_backend`, applied only when CUDA is absent. Verified against
megatron-core 0.16.1 and 0.19.2 (:data:`UPSTREAM`). megatron-core 0.16.1 has ~150 hard-coded CUDA sites; rather than patch each, the backend (1) routes the CUDA
RNG and device queries to their CPU equivalents, (2) makes stream/event/synchronize calls
no-ops, and (3) installs a torch-function mode that maps every `device="cuda"` argument,
`.cuda()` and `.pin_memory()` to the CPU. Each patch is a :class:`Patch` with the upstream symbol
it replaces and why; ``tests/unit/test_canary.py`` fails loudly when a symbol moves.

Megatron-Bridge's CPU-only runtime patches live in :mod:`rlpt_plugin.megatron.host.bridge_cpu`; the
one patch that GPU installs of the pinned versions need too lives in ``patches/``.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch.overrides import TorchFunctionMode

log = logging.getLogger(__name__)

UPSTREAM = ("megatron-core==0.16.1", "megatron-core==0.19.2")  # every Patch target exists in both
_CPU = torch.device("cpu")


@dataclass(frozen=True)
class Patch:
    """One runtime replacement: ``module.attr`` (``attr`` may be dotted) becomes ``make()``."""

    module: str
    attr: str
    reason: str
    make: Callable[[Any], Any]  # receives the original object, returns the replacement

    def target(self) -> tuple[Any, str, Any]:
        """Resolve (owner object, final attribute name, original); raises if the symbol moved."""
        owner: Any = importlib.import_module(self.module)
        *path, name = self.attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        return owner, name, getattr(owner, name)


# ---------------------------------------------------------------------------------------------
# Replacements
# ---------------------------------------------------------------------------------------------
def _cpu_get_rng_state(*_args: Any, **_kwargs: Any) -> torch.Tensor:
    return torch.get_rng_state()


def _cpu_set_rng_state(new_state: torch.Tensor, *_args: Any, **_kwargs: Any) -> None:
    if isinstance(new_state, torch.Generator):  # graph-safe trackers store generators
        new_state = new_state.get_state()
    torch.set_rng_state(new_state)


def _cpu_manual_seed(seed: int, *_args: Any, **_kwargs: Any) -> None:
    # Seed the generator directly: torch.manual_seed itself calls torch.cuda.manual_seed_all.
    torch.default_generator.manual_seed(int(seed))


class _NullStream:
    """Stands in for torch.cuda.Stream/Event: every method is a no-op."""

    def __init__(self, *_args: Any, **_kwargs: Any) -> None:
        pass

    def __getattr__(self, _name: str) -> Callable[..., Any]:
        return lambda *a, **k: None

    def query(self) -> bool:
        return True

    def elapsed_time(self, _other: Any) -> float:
        return 0.0

    def __enter__(self) -> "_NullStream":
        return self

    def __exit__(self, *_exc: Any) -> None:
        return None


def _null_stream_context(*_args: Any, **_kwargs: Any) -> _NullStream:
    return _NullStream()


def _noop(*_args: Any, **_kwargs: Any) -> None:
    return None


def _zero(*_args: Any, **_kwargs: Any) -> int:
    return 0


def _const(value: Any) -> Callable[..., Any]:
    return lambda *_a, **_k: value


_GIB = 1 << 30


class _MemStats(dict):
    def __missing__(self, _key: str) -> int:
        return 0


def _mem_info(*_args: Any, **_kwargs: Any) -> tuple[int, int]:
    return (16 * _GIB, 16 * _GIB)


class _DropForkWarning(logging.Filter):
    """The RNG tracker's fork() warns when the CPU RNG moved inside a "GPU" RNG context; on
    this backend the tracked generator IS the CPU generator, so the warning is a false alarm."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "CPU RNG state changed within GPU RNG context" not in record.getMessage()


PATCHES: tuple[Patch, ...] = (
    # --- RNG: megatron's model-parallel RNG tracker stores and swaps "CUDA" generator states.
    Patch("torch.cuda", "get_rng_state", "RNG tracker reads the CUDA generator state",
          lambda _: _cpu_get_rng_state),
    Patch("torch.cuda", "set_rng_state", "RNG tracker restores the CUDA generator state",
          lambda _: _cpu_set_rng_state),
    Patch("torch.cuda", "manual_seed", "model_parallel_cuda_manual_seed seeds the CUDA generator",
          lambda _: _cpu_manual_seed),
    Patch("torch.cuda", "manual_seed_all", "seeding helpers seed all CUDA generators",
          lambda _: _cpu_manual_seed),
    Patch("torch.cuda", "random.get_rng_state", "_get_cuda_rng_state calls it directly",
          lambda _: _cpu_get_rng_state),
    Patch("megatron.core.tensor_parallel.random", "_get_cuda_rng_state",
          "tracker fork() reads per-device CUDA generators", lambda _: _cpu_get_rng_state),
    Patch("megatron.core.tensor_parallel.random", "_set_cuda_rng_state",
          "tracker fork() writes per-device CUDA generators via _lazy_call",
          lambda _: _cpu_set_rng_state),
    # --- Device queries: megatron builds tensors with device=torch.cuda.current_device().
    Patch("torch.cuda", "current_device", "device=torch.cuda.current_device() everywhere; the "
          "device mode maps the index to the CPU", lambda _: _zero),
    Patch("torch.cuda", "device_count", "initialisation guards such as `device_count() > 0` "
          "(Bridge seeds the model-parallel RNG only then)", lambda _: _const(1)),
    Patch("torch.cuda", "set_device", "initialize_megatron pins a device per rank", lambda _: _noop),
    Patch("torch.cuda", "synchronize", "schedules/timers synchronize before and after p2p",
          lambda _: _noop),
    Patch("torch.cuda", "empty_cache", "called between phases to free memory", lambda _: _noop),
    Patch("torch.cuda", "Stream", "DDP/optimizer overlap and inference create side streams",
          lambda _: _NullStream),
    Patch("torch.cuda", "Event", "timers and the inference engine record events",
          lambda _: _NullStream),
    Patch("torch.cuda", "current_stream", "wait_stream/record_stream on the current stream",
          lambda _: _null_stream_context),
    Patch("torch.cuda", "default_stream", "as current_stream", lambda _: _null_stream_context),
    Patch("torch.cuda", "stream", "`with torch.cuda.stream(s):` blocks", lambda _: _null_stream_context),
    Patch("torch.cuda", "memory_allocated", "memory reports in logging", lambda _: _zero),
    Patch("torch.cuda", "max_memory_allocated", "memory reports in logging", lambda _: _zero),
    Patch("torch.cuda", "memory_reserved", "memory reports in logging", lambda _: _zero),
    Patch("torch.cuda", "max_memory_reserved", "memory reports in logging", lambda _: _zero),
    Patch("torch.cuda", "memory_stats", "memory reports in logging", lambda _: (lambda *a, **k: _MemStats())),
    Patch("torch.cuda", "mem_get_info", "memory reports in logging", lambda _: _mem_info),
    Patch("torch.cuda", "reset_peak_memory_stats", "memory reports in logging", lambda _: _noop),
    Patch("torch.cuda", "get_device_capability", "feature probes (e.g. FP8/flash support)",
          lambda _: _const((0, 0))),
    Patch("torch.cuda", "get_device_name", "logged at start-up", lambda _: _const("cpu")),
)


# ---------------------------------------------------------------------------------------------
# Device mode: cuda -> cpu for every torch call made on the threads that entered it
# ---------------------------------------------------------------------------------------------
def _is_cuda(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    # A bare int is a CUDA ordinal in torch's API (it is what torch.cuda.current_device() gives).
    return isinstance(device, int) and not isinstance(device, bool)


_CUDA_TYPE_NAMES = {
    "torch.FloatTensor": "torch.cuda.FloatTensor",
    "torch.HalfTensor": "torch.cuda.HalfTensor",
    "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor",
    "torch.DoubleTensor": "torch.cuda.DoubleTensor",
    "torch.LongTensor": "torch.cuda.LongTensor",
    "torch.IntTensor": "torch.cuda.IntTensor",
    "torch.ByteTensor": "torch.cuda.ByteTensor",
    "torch.BoolTensor": "torch.cuda.BoolTensor",
}


class CudaToCpuMode(TorchFunctionMode):
    """Maps CUDA placements to the CPU.

    Covers ``device=`` keyword and positional ``.to('cuda')`` placements, ``.cuda()`` and
    ``.pin_memory()`` (identity), and ``Tensor.type()`` without arguments (reports the CUDA
    type name, because megatron's optimizers assert on ``torch.cuda.*Tensor`` names).
    """

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = dict(kwargs or {})
        name = getattr(func, "__name__", "")
        if name in ("cuda", "pin_memory") and args and isinstance(args[0], torch.Tensor):
            return args[0]
        if name == "type" and len(args) == 1 and not kwargs and isinstance(args[0], torch.Tensor):
            plain = func(*args)
            return _CUDA_TYPE_NAMES.get(plain, plain)
        if "device" in kwargs and _is_cuda(kwargs["device"]):
            kwargs["device"] = _CPU
        if name == "to" and len(args) > 1 and not isinstance(args[1], (torch.Tensor, torch.dtype)):
            if _is_cuda(args[1]):
                args = (args[0], _CPU, *args[2:])
        return func(*args, **kwargs)


def _fresh(replacement: Any, name: str) -> Any:
    """A distinct object per patched name: torch.compile's trace rules index torch callables
    by identity and reject one object registered under several names."""
    if isinstance(replacement, type):
        return type(name, (replacement,), {})
    if callable(replacement):
        def fresh(*args: Any, **kwargs: Any) -> Any:
            return replacement(*args, **kwargs)

        fresh.__name__ = fresh.__qualname__ = name
        return fresh
    return replacement


_state = threading.local()
_lock = threading.Lock()
_applied: dict[str, Any] = {}


def cuda_available() -> bool:
    """True when a real CUDA device is usable; the backend never activates then."""
    return torch.cuda.is_available()


def enable_cpu_backend() -> bool:
    """Apply every patch once per process and enter the device mode on this thread.

    Returns True when the backend is active, False when CUDA is present (nothing is done).
    Idempotent; safe to call from every entry point (tests, workers, the CLI).
    """
    if cuda_available():
        return False
    with _lock:
        if not _applied:
            for patch in PATCHES:
                owner, name, original = patch.target()
                replacement = _fresh(patch.make(original), name)
                _applied[f"{patch.module}.{patch.attr}"] = original
                setattr(owner, name, replacement)
            logging.getLogger("megatron.core.tensor_parallel.random").addFilter(_DropForkWarning())
    enter_device_mode()
    return True


def enter_device_mode() -> None:
    """Enter the cuda->cpu mode on the calling thread (modes are thread-local)."""
    if getattr(_state, "mode", None) is None:
        mode = CudaToCpuMode()
        mode.__enter__()
        _state.mode = mode


def is_enabled() -> bool:
    return bool(_applied)
