"""Sweeps over the synthetic-world demo, each measured in one run of this script.

    .venv/bin/python bench/demo_sweeps.py seeds    --out runs/seeds    [--seeds 1 2 3]
    .venv/bin/python bench/demo_sweeps.py rollouts --out runs/rollouts [--k 1 4 8]
    .venv/bin/python bench/demo_sweeps.py failure  --out runs/failure

* ``seeds``: the whole demo once per training seed (same world): mean and standard deviation of
  every number per model, and of SIP minus baseline: the seed-to-seed noise the demo's margins
  must clear.
* ``rollouts``: one world, one start model, one baseline; SIP continued with K rollouts (+ the
  original) for each K: does a larger pool help?
* ``failure``: the paper's failure mode: training on the model's OWN rollouts (no original in
  the pool) with a safety-only reward (RF-NLL on the best = SFT on a safe own sample); with
  ``--control`` also the same with the full reward. Prints the table and the share of
  degenerate continuations.

Extra ``--set key=value`` pairs change any demo setting (``rlpt demo --help`` lists them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from statistics import mean, pstdev

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpt_plugin.demo import DemoSettings, pipeline, report, run_demo  # noqa: E402
from rlpt_plugin.demo.progress import Progress  # noqa: E402
from rlpt_plugin.demo.settings import parse_setting  # noqa: E402

NUMBERS = ("quality_win_rate", "factuality", "safety", "heldout_nll")


def _settings(pairs: list[str], **fixed) -> DemoSettings:  # noqa: ANN003
    values = dict(parse_setting(pair) for pair in pairs)
    return DemoSettings(**{**values, **fixed})


def seeds(args: argparse.Namespace) -> dict:
    runs = {}
    for seed in args.seeds:
        runs[seed] = run_demo(Path(args.out) / f"seed{seed}", _settings(args.set, seed=seed))
    models = [m for m in ("start", "baseline", "sip") if all(m in r for r in runs.values())]
    summary: dict = {}
    print(f"\n{len(runs)} seeds {list(runs)}: mean +- std (population) over seeds")
    print(f"{'':<22}" + "".join(f"{k:>24}" for k in NUMBERS))
    for m in models + ["sip - baseline"]:
        row = {}
        for k in NUMBERS:
            if m == "sip - baseline":
                values = [r["sip"][k] - r["baseline"][k] for r in runs.values()]
            else:
                values = [r[m][k] for r in runs.values()]
            row[k] = {"mean": mean(values), "std": pstdev(values), "values": values}
        summary[m] = row
        print(f"{m:<22}" + "".join(f"{row[k]['mean']:>15.3f} +- {row[k]['std']:.3f}" for k in NUMBERS))
    return summary


def _shared_start(s: DemoSettings, out: Path, show: Progress) -> tuple[dict, dict]:
    pipeline.build_world(s, out)
    pipeline.rewrite(s, out)
    start = pipeline.train_phase("start", s, out, s.start_steps, pipeline.start_overrides(s), start_from=None,
                                 progress=show)
    base = pipeline.train_phase("baseline", s, out, s.steps, pipeline.lm_overrides(s) + pipeline.continue_overrides(s),
                                start_from=out / "start" / "ckpt", progress=show)
    return start, base


def _degenerate_share(out: Path, phase: dict, s: DemoSettings) -> float:
    from rlpt_plugin.world import build_kb
    from rlpt_plugin.world.oracle import quality_key

    items = [json.loads(line) for line in (out / "world" / "eval.jsonl").read_text().splitlines()]
    kb = build_kb(pipeline.world_config(s))
    return mean(quality_key(it["text"], c, kb)[0] > 0 for it, c in zip(items, phase["continuations"]))


def _compare(args: argparse.Namespace, variants: dict[str, DemoSettings], base: DemoSettings) -> dict:
    out, show = Path(args.out), Progress()
    start, baseline = _shared_start(base, out, show)
    phases = {"start": start, "baseline": baseline}
    for name, s in variants.items():
        phases[name] = pipeline.train_phase(name, s, out, s.steps, pipeline.sip_overrides(s, s.loss),
                                            start_from=out / "start" / "ckpt", progress=show)
    models = pipeline.judge_models(base, out, phases)
    for name, phase in phases.items():
        models[name]["degenerate_share"] = _degenerate_share(out, phase, base)
        records = pipeline.read_metrics(out / name)
        if records:
            curve = report.curves(records)["rollout_chosen_rate"]
            tenth = max(1, len(curve) // 10)
            models[name]["rollout_chosen_first_last"] = [mean(curve[:tenth]), mean(curve[-tenth:])]
    print("\n" + report.table(models))
    print(f"\n{'':<24}{'degenerate share':>18}{'rollout chosen (first -> last 10%)':>38}")
    for name, m in models.items():
        first_last = m.get("rollout_chosen_first_last")
        cells = f"{first_last[0]:.3f} -> {first_last[1]:.3f}" if first_last else "-"
        print(f"{name:<24}{m['degenerate_share']:>18.3f}{cells:>38}")
    (out / "sweep.json").write_text(json.dumps(models, indent=1))
    return models


def rollouts(args: argparse.Namespace) -> dict:
    base = _settings(args.set)
    return _compare(args, {f"sip_k{k}": dataclasses.replace(base, rollouts=k) for k in args.k}, base)


def failure(args: argparse.Namespace) -> dict:
    base = _settings(args.set)
    own = dataclasses.replace(base, loss="rf_nll", rollouts_only=True, lm_weight=0.0)
    variants = {"own_rollouts_safety_only": dataclasses.replace(own, reward="safety")}
    if args.control:  # the same training with the full reward
        variants["own_rollouts_full_reward"] = own
    return _compare(args, variants, base)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="sweep", required=True)
    for name in ("seeds", "rollouts", "failure"):
        p = sub.add_parser(name)
        p.add_argument("--out", required=True)
        p.add_argument("--set", action="append", default=[], help="demo setting key=value")
        if name == "seeds":
            p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
        if name == "rollouts":
            p.add_argument("--k", type=int, nargs="+", default=[1, 4, 8])
        if name == "failure":
            p.add_argument("--control", action="store_true", help="also the full reward (a control)")
    args = parser.parse_args()
    {"seeds": seeds, "rollouts": rollouts, "failure": failure}[args.sweep](args)


if __name__ == "__main__":
    main()
