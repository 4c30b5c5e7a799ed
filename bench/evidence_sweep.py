"""The evidence sweep: SIP against next-token pretraining and its controls, over training seeds
and world seeds, with mean, standard deviation and the SIP minus control margins.

    .venv/bin/python bench/evidence_sweep.py --out runs/evidence                  # demo scale
    .venv/bin/python bench/evidence_sweep.py --out runs/evidence-quick --quick    # CI scale
    .venv/bin/python bench/evidence_sweep.py --out runs/x --world-seeds 0 1 --seeds 1 2 3 \\
        --set entities=120 --set defect_rate=0.06 --variant no_rewrite:rewrite=false

Every cell (one world seed x one training seed) is ``OUT/world<W>_seed<S>``: the world, its
rewritten store, a start model, and from the start model, for the same number of steps:

* ``baseline``: next-token prediction on the raw corpus's windows (the continued baseline);
* ``sip``: self-improving pretraining with the demo's settings (``--set`` changes them);
* ``baseline_compute``: next-token for ``control_factor`` x the steps: as many tokens trained as
  SIP (its three rows per prefix), not its wall-clock (printed beside it);
* ``sft_rewrites``: next-token on the teacher's rewrites (the paper's "SFT on rewrites");
* ``--variant NAME:key=value,...``: further SIP arms with changed settings (pool, K, beta, ...).

Finished phases are reused (rerun with the same ``--out`` to resume or to add cells and arms);
each cell's numbers are kept in its ``cell.json`` and the summary in ``OUT/summary.json``.
The margins are paired (SIP minus the control in the same cell: same world, seed and start
model); "> 2 sd" marks a mean margin larger than twice its standard deviation over the cells.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import time
from pathlib import Path
from statistics import mean, stdev
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlpt_plugin.demo import DemoSettings, pipeline, report  # noqa: E402
from rlpt_plugin.demo.progress import Progress  # noqa: E402
from rlpt_plugin.demo.settings import parse_setting  # noqa: E402
from rlpt_plugin.world.evaluate import CLAIMS  # noqa: E402

AXES = ("quality_win_rate", "factuality", "safety")
SLICES = (None, "ordinary", "systematic")
#: A reduced scale for a quick check on a loaded 2-core machine: the CI world and start model
#: (tests/demo/test_evidence.py: 40 people, 400 start steps, K = 4) with 48 continuation steps.
QUICK = {"entities": 40, "start_steps": 400, "steps": 48, "rollouts": 4}


def parse_settings(pairs: list[str], base: dict[str, Any] | None = None) -> dict[str, Any]:
    values = dict(base or {})
    for pair in pairs:
        try:
            key, value = parse_setting(pair)
        except ValueError as err:
            raise SystemExit(str(err)) from None
        values[key] = value
    return values


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, rest = text.partition(":")
    if not name or not rest:
        raise SystemExit(f"--variant must be NAME:key=value[,key=value], got {text!r}")
    return name, re.split(r",(?=\w+=)", rest)  # a value may hold commas: reward=quality,safety


def _chosen(out: Path, name: str) -> dict[str, float] | None:
    records = pipeline.read_metrics(out / name)
    if not records:
        return None
    curve = [v for v in report.curves(records)["rollout_chosen_rate"] if v == v]
    if not curve:
        return None
    tenth = max(1, len(curve) // 10)
    return {"first": mean(curve[:tenth]), "last": mean(curve[-tenth:]), "mean": mean(curve)}


def shared_start(root: Path, s: DemoSettings, start_seed: int, show: Progress) -> Path:
    """``ROOT/world<W>_start``: the world, its store and ONE start model (training seed
    ``start_seed``) that every cell of this world continues from."""
    out = root / f"world{s.world_seed}_start"
    s0 = dataclasses.replace(s, seed=start_seed)
    pipeline.limit_threads(s0)  # as run_cell: one torch thread unless the settings say otherwise
    pipeline.build_world(s0, out)
    pipeline.rewrite(s0, out)
    pipeline.train_phase("start", s0, out, s0.start_steps, pipeline.start_overrides(s0), start_from=None,
                         progress=show)
    return out


def _link_shared(out: Path, shared: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for part in ("world", "store", "start"):
        if not (out / part).exists():
            (out / part).symlink_to((shared / part).resolve(), target_is_directory=True)


def run_cell(out: Path, s: DemoSettings, variants: dict[str, DemoSettings], show: Progress,
             shared: Path | None = None) -> dict[str, Any]:
    """One world x seed: every arm trained (or reused) and judged by the exact oracle. With
    ``shared``, the world, store and start model are that directory's (linked, not retrained)."""
    began = time.perf_counter()
    pipeline.limit_threads(s)
    if shared is not None:
        _link_shared(out, shared)
    pipeline.build_world(s, out)
    pipeline.rewrite(s, out)
    phases = {"start": pipeline.train_phase("start", s, out, s.start_steps, pipeline.start_overrides(s),
                                            start_from=None, progress=show)}
    ckpt = out / "start" / "ckpt"
    phases["baseline"] = pipeline.train_phase("baseline", s, out, s.steps,
                                              pipeline.lm_overrides(s) + pipeline.continue_overrides(s),
                                              start_from=ckpt, progress=show)
    sips = {"sip": s, **variants}
    for name, v in sips.items():
        phases[name] = pipeline.train_phase(name, v, out, v.steps, pipeline.sip_overrides(v, v.loss),
                                            start_from=ckpt, progress=show)
    phases.update(pipeline.control_phases(s, out, ckpt, show))
    models = pipeline.judge_models(s, out, phases)
    cell: dict[str, Any] = {"models": models, "settings": dataclasses.asdict(s),
                            "variants": {k: dataclasses.asdict(v) for k, v in variants.items()},
                            "seconds": {k: round(p.get("seconds", 0.0), 1) for k, p in phases.items()},
                            "step_s": {k: (p.get("step_timing") or {}).get("step_s") for k, p in phases.items()},
                            "rollout_chosen": {k: _chosen(out, k) for k in sips},
                            "chance": {k: pipeline.chance_rollout_rate(v) for k, v in sips.items()},
                            "cell_seconds_this_call": round(time.perf_counter() - began, 1)}
    (out / "cell.json").write_text(json.dumps(cell, indent=1, sort_keys=True))
    return cell


def _stats(values: list[float]) -> dict[str, Any]:
    return {"mean": mean(values), "sd": stdev(values) if len(values) > 1 else float("nan"), "n": len(values),
            "values": values}


def _get(model: dict[str, Any], part: str | None, axis: str) -> float:
    return (model if part is None else model[part])[axis]


def run_variants_only(out: Path, variants: dict[str, DemoSettings], show: Progress) -> None:
    """Only the ``--variant`` SIP arms of an existing cell (its start model must exist): extra
    arms for some cells without retraining the others; the next full call judges them."""
    for name, v in variants.items():
        pipeline.limit_threads(v)  # as run_cell: one torch thread unless the settings say otherwise
        pipeline.train_phase(name, v, out, v.steps, pipeline.sip_overrides(v, v.loss),
                             start_from=out / "start" / "ckpt", progress=show)


def _with_variants(cells: dict[str, dict[str, Any]], root: Path, variants: dict[str, list[str]]) -> None:
    """Judge variant arms that were trained (``--variants-only``) in cells summarised without them."""
    for name, cell in cells.items():
        missing = [v for v in variants if v not in cell["models"] and (root / name / v / "eval.json").exists()]
        if not missing:
            continue
        s = DemoSettings(**cell["settings"])
        phases = {k: json.loads((root / name / k / "eval.json").read_text()) for k in ("start", *missing)}
        judged = pipeline.judge_models(s, root / name, phases)
        for v in missing:
            cell["models"][v] = judged[v]
            cell["rollout_chosen"][v] = _chosen(root / name, v)
            cell["chance"][v] = pipeline.chance_rollout_rate(
                DemoSettings(**{**cell["settings"], **parse_settings(variants[v])}))


def _with_claims(cells: dict[str, dict[str, Any]], root: Path) -> None:
    """Add the target-claim breakdown (``pipeline.judge_models``) to cells judged before it existed."""
    for name, cell in cells.items():
        missing = [a for a, m in cell["models"].items() if "target_claims" not in m]
        if missing:
            phases = {a: json.loads((root / name / a / "eval.json").read_text()) for a in {"start", *missing}}
            judged = pipeline.judge_models(DemoSettings(**cell["settings"]), root / name, phases)
            for a in missing:
                cell["models"][a]["target_claims"] = judged[a]["target_claims"]


def summarize(cells: dict[str, dict[str, Any]], arms: list[str], sips: list[str]) -> dict[str, Any]:
    """Mean and sd per arm and of the paired margins; an arm missing from some cells is
    summarised over the cells that have it (its ``n`` says how many)."""
    summary: dict[str, Any] = {"arms": {}, "margins": {}, "rollout_chosen": {}}

    def having(*names: str) -> list[dict[str, Any]]:
        return [c for c in cells.values() if all(n in c["models"] for n in names)]

    for part in SLICES:
        key = part or "all"
        summary["arms"][key] = {a: {ax: _stats([_get(c["models"][a], part, ax) for c in having(a)])
                                    for ax in AXES} for a in arms if having(a)}
        summary["margins"][key] = {
            f"{sip} - {ctl}": {ax: _stats([_get(c["models"][sip], part, ax) - _get(c["models"][ctl], part, ax)
                                           for c in having(sip, ctl)]) for ax in AXES}
            for sip in sips for ctl in ("baseline", "baseline_compute", "sft_rewrites", "start", *sips[:1])
            if sip != ctl and having(sip, ctl)}
    for sip in sips:
        rates = [c["rollout_chosen"][sip] for c in cells.values() if c["rollout_chosen"].get(sip)]
        if rates:
            summary["rollout_chosen"][sip] = {k: _stats([r[k] for r in rates]) for k in ("first", "last", "mean")}
            summary["rollout_chosen"][sip]["chance"] = next(iter(cells.values()))["chance"][sip]
    summary["target_claims"] = {
        a: {g: {k: _stats([c["models"][a]["target_claims"][g][k] for c in having(a)]) for k in CLAIMS}
            for g in ("ordinary", "myth") if all(g in c["models"][a].get("target_claims", {}) for c in having(a))}
        for a in arms if having(a)}
    nll = {a: _stats([c["models"][a]["heldout_nll"] for c in having(a)]) for a in arms if having(a)}
    summary["heldout_nll"] = nll
    summary["step_s"] = {a: _stats([c["step_s"][a] for c in cells.values() if c["step_s"].get(a)]) for a in arms
                         if any(c["step_s"].get(a) for c in cells.values())}
    return summary


def print_summary(summary: dict[str, Any], cells: dict[str, Any], arms: list[str]) -> None:
    first = next(iter(cells.values()))["models"]["start"]
    counts = {"all": first["count"], "ordinary": first["ordinary"].get("count"),
              "systematic": first["systematic"].get("count")}
    print(f"\n{len(cells)} cells ({', '.join(cells)}); mean +- sd (sample) over cells, rates in %")
    for key, per_arm in summary["arms"].items():
        print(f"\n[{key}] ({counts[key]} held-out prefixes per cell)")
        print(f"{'':<34}" + "".join(f"{ax:>22}" for ax in AXES))
        for a in arms:
            if a not in per_arm:
                continue
            row = per_arm[a]
            label = report.LABELS.get(a, a) + (f" (n={row[AXES[0]]['n']})" if row[AXES[0]]["n"] != len(cells) else "")
            print(f"{label:<34}" + "".join(
                f"{100 * row[ax]['mean']:>14.1f} +- {100 * row[ax]['sd']:4.1f}" for ax in AXES))
        for name, row in summary["margins"][key].items():
            if name.endswith("- start"):
                continue
            cells_txt = "".join(f"{100 * row[ax]['mean']:>+11.1f} +- {100 * row[ax]['sd']:4.1f}"
                                f"{' *' if row[ax]['mean'] > 2 * row[ax]['sd'] else '  '}  " for ax in AXES)
            n = row[AXES[0]]["n"]
            print(f"{name + (f' (n={n})' if n != len(cells) else ''):<34}{cells_txt}")
    print("\n* : the mean margin is larger than twice its sd over the cells (paired: same world, seed, start)")
    print("\nthe claim about the fact a prefix asks for (mean % over cells: true / myth / other value / none):")
    for a in arms:
        groups = summary["target_claims"].get(a, {})
        if groups:
            print(f"{report.LABELS.get(a, a):<34}" + "".join(
                f"  {g}: " + " / ".join(f"{100 * groups[g][k]['mean']:.1f}" for k in CLAIMS) for g in groups))
    print(f"\nheld-out NLL: " + ", ".join(f"{a} {s['mean']:.3f} +- {s['sd']:.3f}" for a, s in summary["heldout_nll"].items()))
    print("step seconds: " + ", ".join(f"{a} {s['mean']:.3f}" for a, s in summary["step_s"].items()))
    for sip, r in summary["rollout_chosen"].items():
        print(f"rollout-chosen rate, {sip}: first tenth {r['first']['mean']:.3f} +- {r['first']['sd']:.3f}, "
              f"last tenth {r['last']['mean']:.3f} +- {r['last']['sd']:.3f}, whole run {r['mean']['mean']:.3f}; "
              f"chance {r['chance']:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True)
    parser.add_argument("--world-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--quick", action="store_true", help=f"the CI scale: {QUICK}")
    parser.add_argument("--set", action="append", default=[], help="demo setting key=value (all arms)")
    parser.add_argument("--variant", action="append", default=[],
                        help="an extra SIP arm NAME:key=value[,key=value] (e.g. no_rewrite:rewrite=false)")
    parser.add_argument("--summary-only", action="store_true", help="only aggregate the finished cells")
    parser.add_argument("--shared-start", type=int, default=None, metavar="SEED",
                        help="train ONE start model per world (with this training seed) and continue every "
                             "cell of the world from it (cheaper; the seeds then vary the continuations only)")
    parser.add_argument("--variants-only", action="store_true",
                        help="train only the --variant arms of the given cells (their start must exist)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    base = parse_settings(args.set, QUICK if args.quick else None)
    variants = dict(parse_variant(v) for v in args.variant)
    root, show = Path(args.out), Progress(enabled=not args.no_progress)
    cells: dict[str, dict[str, Any]] = {}
    began = time.perf_counter()
    for ws in args.world_seeds:
        for seed in args.seeds:
            s = DemoSettings(**{**base, "world_seed": ws, "seed": seed})
            s.validate()
            vs = {k: DemoSettings(**{**dataclasses.asdict(s), **parse_settings(p)}) for k, p in variants.items()}
            out = root / f"world{ws}_seed{seed}"
            if args.summary_only:
                if (out / "cell.json").exists():
                    cells[out.name] = json.loads((out / "cell.json").read_text())
                continue
            if args.variants_only:
                run_variants_only(out, vs, show)
                continue
            t = time.perf_counter()
            shared = None if args.shared_start is None else shared_start(root, s, args.shared_start, show)
            cells[out.name] = run_cell(out, s, vs, show, shared)
            print(f"[sweep] {out.name}: {time.perf_counter() - t:.0f} s", flush=True)
    if args.variants_only:
        return
    if not cells:
        raise SystemExit("no finished cells")
    sips = ["sip", *variants]
    arms = ["start", "baseline", "baseline_compute", "sft_rewrites", *sips]
    _with_variants(cells, root, variants)
    _with_claims(cells, root)
    summary = summarize(cells, arms, sips)
    summary["cells"] = list(cells)
    summary["wall_seconds_this_call"] = round(time.perf_counter() - began, 1)
    (root / "summary.json").write_text(json.dumps(summary, indent=1, sort_keys=True))
    print_summary(summary, cells, arms)
    print(f"\n[sweep] {root / 'summary.json'}; {summary['wall_seconds_this_call']:.0f} s this call")


if __name__ == "__main__":
    main()
