"""Kill -9 an in-loop run (rollouts + a real HTTP judge on loopback, pools in flight) at a random
step after a checkpoint, rerun the same command: the per-step losses and the final weights equal
those of an uninterrupted run, and metrics.jsonl holds one line per step."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.bridge.test_in_loop import TIMING, _store_and_overrides, quality_judge
from tests.teacher.loopback_server import LoopbackServer

pytestmark = [pytest.mark.bridge]
STEPS, SAVE_EVERY = 8, 2


def command(out: Path, overrides: list[str]) -> list[str]:
    return [sys.executable, "-m", "rlpt_plugin.cli", "train", "--recipe", "rlpt_plugin.recipes.tiny:tiny_config",
            "--out", str(out), f"train.train_iters={STEPS}", f"checkpoint.save_interval={SAVE_EVERY}",
            f"checkpoint.save={out / 'ckpt'}", f"checkpoint.load={out / 'ckpt'}", *overrides]


def logged_steps(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(cmd: list[str], log: Path, kill_after_step: int | None = None) -> int:
    """Run the command; with ``kill_after_step``, SIGKILL its whole process group as soon as
    that step is logged (it is then past the checkpoint before it)."""
    with log.open("a") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        deadline = time.monotonic() + 900
        while proc.poll() is None and time.monotonic() < deadline:
            if kill_after_step is not None and any(r["step"] >= kill_after_step
                                                   for r in logged_steps(Path(cmd[cmd.index("--out") + 1]) / "metrics.jsonl")):
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return -9
            time.sleep(0.05)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            raise AssertionError(f"{cmd} did not finish in 900 s; see {log}")
        return proc.returncode


def final_weights(ckpt: Path) -> dict[str, torch.Tensor]:
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    target = ckpt.parent / f"{ckpt.parent.name}_final.pt"
    dcp_to_torch_save(ckpt / f"iter_{STEPS:07d}", target)
    state = torch.load(target, weights_only=False)
    return {k: v for k, v in state.items() if isinstance(v, torch.Tensor) and k.startswith("model")} or state


def test_sigkill_then_rerun_equals_an_uninterrupted_run(tmp_path):
    kill_after = random.Random(os.environ.get("RLPT_KILL_SEED", "0")).randint(SAVE_EVERY + 1, STEPS - 2)
    with LoopbackServer(responder=quality_judge, max_lifetime_s=1800) as judge:
        overrides = _store_and_overrides(tmp_path, judge.base_url)
        straight, killed = tmp_path / "straight", tmp_path / "killed"
        assert run(command(straight, overrides), tmp_path / "straight.log") == 0
        assert run(command(killed, overrides), tmp_path / "killed.log", kill_after_step=kill_after) == -9
        partial = logged_steps(killed / "metrics.jsonl")
        assert partial and max(r["step"] for r in partial) >= kill_after  # killed after a checkpoint
        assert not (killed / "ckpt" / f"iter_{STEPS:07d}").exists()
        assert run(command(killed, overrides), tmp_path / "killed.log") == 0
    want, got = logged_steps(straight / "metrics.jsonl"), logged_steps(killed / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(STEPS))  # one line per step, replays replaced
    for a, b in zip(want, got):
        a = {k: v for k, v in a.items() if k not in TIMING}
        b = {k: v for k, v in b.items() if k not in TIMING}
        assert a == b, f"step {a['step']}: {b} != {a}"
    w_straight, w_killed = final_weights(straight / "ckpt"), final_weights(killed / "ckpt")
    assert w_straight.keys() == w_killed.keys() and len(w_straight) > 0
    for name, tensor in w_straight.items():
        if isinstance(tensor, torch.Tensor):
            assert torch.equal(tensor, w_killed[name]), name
