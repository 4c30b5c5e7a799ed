"""The reasoning sweep: ``rlpt demo --task reasoning`` over world seeds and training seeds, with
the mean and standard deviation of every arm and the paired margins the report's ordering needs.

    .venv/bin/python bench/reasoning_sweep.py --out runs/reasoning                  # 2 worlds x 3 seeds
    .venv/bin/python bench/reasoning_sweep.py --out runs/r --world-seeds 5 --seeds 7 8 \\
        --jobs 2 --set entities=140 --set thinking_budget=20

Each cell (one world seed x one training seed) is one demo run in ``OUT/world<W>_seed<S>``
(a subprocess, resumable: rerun with the same ``--out`` to finish or add cells); ``--jobs``
cells run at once, each on one torch thread. Printed per arm: held-out two-hop accuracy, the
share of continuations that open with a complete thought, the share whose thought names the
right employer and site, and the thought length. The margins are paired (the two arms of the
same cell share world, seed and, where the pipeline shares them, the model they start from):
SFT(think) - NTP (raw), SFT(think) + RLMT - SFT(think), and SFT(think) + RLMT - SFT(think)
continued for RLMT's steps (the steps-matched control). "> 2 sd" marks a mean margin larger
than twice its standard deviation over the cells. ``OUT/summary.json`` keeps every number.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from statistics import mean, stdev
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("base", "ntp_raw", "sft_think", "sft_think_rlmt", "sft_think_more")
NUMBERS = ("correct", "thought", "thought_correct", "thought_tokens")
MARGINS = (("sft_think", "ntp_raw"), ("sft_think_rlmt", "sft_think"), ("sft_think_rlmt", "sft_think_more"))


def run_cell(out: Path, world_seed: int, seed: int, sets: list[str]) -> dict[str, Any]:
    results = out / "reasoning_results.json"
    if not results.exists():
        flags = [f"--{k.replace('_', '-')}={v}" for k, _, v in (s.partition("=") for s in sets)]
        began = time.perf_counter()
        with (out.parent / f"{out.name}.log").open("w") as log:
            done = subprocess.run([sys.executable, "-m", "rlpt_plugin.cli", "demo", "--task", "reasoning",
                                   "--out", str(out), "--world-seed", str(world_seed), "--seed", str(seed),
                                   "--threads", "1", "--no-progress", *flags],
                                  cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise SystemExit(f"cell {out.name} failed (exit {done.returncode}): see {out.parent / out.name}.log")
        print(f"[sweep] {out.name} done in {time.perf_counter() - began:.0f} s", flush=True)
    cell = json.loads(results.read_text())
    cell.setdefault("majority_site_share", majority(out))  # runs before the demo recorded it
    return cell


def _stats(values: list[float]) -> dict[str, Any]:
    sd = stdev(values) if len(values) > 1 else 0.0
    return {"mean": mean(values), "sd": sd, "values": values}


def majority(out: Path) -> float:
    """The cell's most-frequent-site level (rlpt_plugin/demo/reasoning.py: majority_share)."""
    sys.path.insert(0, str(ROOT))
    from rlpt_plugin.demo.reasoning import majority_share

    lines = (out / "world" / "reasoning_eval.jsonl").read_text().splitlines()
    return majority_share([json.loads(line) for line in lines])


def summarize(cells: dict[str, dict[str, Any]]) -> dict[str, Any]:
    arms = {arm: {k: _stats([c["models"][arm][k] for c in cells.values()]) for k in NUMBERS} for arm in ARMS}
    margins = {}
    for a, b in MARGINS:
        stats = _stats([c["models"][a]["correct"] - c["models"][b]["correct"] for c in cells.values()])
        stats["clears_2sd"] = stats["mean"] > 2 * stats["sd"] and len(cells) > 1
        margins[f"{a} - {b}"] = stats
    return {"cells": sorted(cells), "arms": arms, "margins": margins,
            "majority_site_share": _stats([c["majority_site_share"] for c in cells.values()])}


def print_summary(summary: dict[str, Any]) -> None:
    n = len(summary["cells"])
    print(f"\n{n} cells {summary['cells']}: mean +- sd (sample) over cells, percent")
    print(f"{'arm':<18}{'accuracy':>16}{'thinks':>16}{'right step':>16}{'thought len':>16}")
    for arm in ARMS:
        row = summary["arms"][arm]
        cells = [f"{100 * row[k]['mean']:6.1f} +- {100 * row[k]['sd']:4.1f}" for k in NUMBERS[:3]]
        cells.append(f"{row['thought_tokens']['mean']:6.1f} +- {row['thought_tokens']['sd']:4.1f}")
        print(f"{arm:<18}" + "".join(f"{c:>16}" for c in cells))
    m = summary["majority_site_share"]
    print(f"{'most frequent site':<18}{100 * m['mean']:6.1f} +- {100 * m['sd']:4.1f}"
          + "   (always answering it; per world)")
    print("\npaired accuracy margins (points):")
    for name, m in summary["margins"].items():
        flag = "> 2 sd" if m["clears_2sd"] else "not > 2 sd"
        values = ", ".join(f"{100 * v:+.1f}" for v in m["values"])
        print(f"  {name:<34}{100 * m['mean']:+6.1f} +- {100 * m['sd']:4.1f}  {flag:<11} [{values}]")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--world-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--jobs", type=int, default=1, help="cells run at once (one torch thread each)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a demo setting for every cell (rlpt demo --help), e.g. entities=140")
    args = parser.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    grid = [(w, s) for w in args.world_seeds for s in args.seeds]
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {f"world{w}_seed{s}": pool.submit(run_cell, root / f"world{w}_seed{s}", w, s, args.set)
                   for w, s in grid}
        cells = {name: f.result() for name, f in futures.items()}
    summary = summarize(cells)
    summary["settings"] = args.set
    (root / "summary.json").write_text(json.dumps(summary, indent=1))
    print_summary(summary)


if __name__ == "__main__":
    main()
