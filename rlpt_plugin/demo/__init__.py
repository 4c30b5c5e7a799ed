"""``rlpt demo``: self-improving pretraining against plain next-token pretraining, end to end on
the synthetic world, measured by its exact oracle (see the README and docs/WORLD.md).

Phases (rlpt_plugin/demo/pipeline.py): world -> rewrite -> start -> baseline -> sip [-> rf_nll];
then every model's greedy continuations of the held-out prefixes are judged by the oracle, the
paper-shaped table is printed, and ``OUT/results.json`` plus two SVG plots are written. Rerunning
with the same ``--out`` skips finished phases and resumes a killed one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from statistics import mean
from typing import Any

from rlpt_plugin.demo import pipeline, report
from rlpt_plugin.demo.progress import Progress
from rlpt_plugin.demo.settings import DemoSettings

__all__ = ["DemoSettings", "run_demo"]


def _mean(records: list[dict[str, float]], key: str, skip: int = 2) -> float:
    values = [r[key] for r in records[skip:] if key in r and r[key] == r[key]]
    return mean(values) if values else float("nan")


def _timing(phases: dict[str, dict[str, Any]], metrics: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """Seconds per phase, and a SIP step against a next-token step on the same model and batch
    of prefixes, split into rollout, judge (waited for / spent in the background) and train."""
    out: dict[str, Any] = {"phase_seconds": {k: round(v.get("seconds", 0.0), 2) for k, v in phases.items()}}
    lm = phases["baseline"].get("step_timing", {})
    for name in ("sip", "rf_nll"):
        if name not in phases or not lm:
            continue
        st, recs = phases[name].get("step_timing", {}), metrics[name]
        split = {"step_s": st.get("step_s"), "rollout_s": _mean(recs, "rollout_s"),
                 "judge_wait_s": _mean(recs, "judge_wait_s"), "judge_background_s": _mean(recs, "judge_s"),
                 "train_s": st.get("train_s"), "prepare_s": st.get("prepare_s")}
        out[name] = {"step": split, "next_token_step_s": lm.get("step_s"),
                     "ratio": split["step_s"] / lm["step_s"] if lm.get("step_s") else None}
    return out


def run_demo(out_dir: str | Path, settings: DemoSettings | None = None, *, progress: bool = True) -> dict[str, Any]:
    s = settings or DemoSettings()
    s.validate()
    pipeline.limit_threads(s)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    show = Progress(enabled=progress)
    began = time.perf_counter()
    show.say(f"[demo] output in {out}; settings: {json.dumps(dataclasses.asdict(s))}")
    if s.task == "reasoning":
        from rlpt_plugin.demo.reasoning import run_reasoning

        return run_reasoning(s, out, show)
    t = time.perf_counter()
    world = pipeline.build_world(s, out)
    show.say(f"[demo] world: {world['documents']} biographies of {world['entities']} people, "
             f"{world['systematic_contexts']} systematic bad contexts, {world['defective_sentences']} defective sentences")
    pipeline.rewrite(s, out)
    phases: dict[str, dict[str, Any]] = {"world+rewrite": {"seconds": time.perf_counter() - t}}
    phases["start"] = pipeline.train_phase("start", s, out, s.start_steps, pipeline.start_overrides(s),
                                           start_from=None, progress=show)
    ckpt = out / "start" / "ckpt"
    phases["baseline"] = pipeline.train_phase("baseline", s, out, s.steps,
                                              pipeline.lm_overrides(s) + pipeline.continue_overrides(s),
                                              start_from=ckpt, progress=show)
    rules = ["sip"] + (["rf_nll"] if s.rf_nll else [])
    for name in rules:
        phases[name] = pipeline.train_phase(name, s, out, s.steps, pipeline.sip_overrides(
            s, s.loss if name == "sip" else "rf_nll"), start_from=ckpt, progress=show)
    controls = pipeline.control_phases(s, out, ckpt, show) if s.controls else {}
    phases.update(controls)
    t = time.perf_counter()
    models = pipeline.judge_models(s, out, {k: phases[k] for k in ("start", "baseline", *controls, *rules)})
    phases["evaluation"] = {"seconds": time.perf_counter() - t}
    metrics = {name: pipeline.read_metrics(out / name) for name in rules}
    runs = {name: report.curves(recs) for name, recs in metrics.items()}
    results: dict[str, Any] = {**models, "settings": dataclasses.asdict(s), "world": world,
                               "rollout_chosen_rate": runs["sip"]["rollout_chosen_rate"],
                               "rollout_chosen_chance": pipeline.chance_rollout_rate(s),
                               "curves": runs, "timing": _timing(phases, metrics),
                               "wall_seconds": round(time.perf_counter() - began, 1)}
    report.write_results(out, results)
    plots = report.write_plots(out, runs)
    labels = {"sip": report.LABELS["sip" if s.loss == "dpo" else s.loss]}  # the sip column's rule
    show.say("\n" + report.tables(models, labels=labels))
    show.say("\nquality win rate: against the start model's continuation of the same prefix (both orders, "
             "a tie counts half); all rates judged by the exact oracle (the training teacher was not: "
             f"judge noise {s.judge_noise}, knowledge {s.teacher_knowledge}).")
    show.say(report.rollout_rate_line(runs["sip"]["rollout_chosen_rate"], pipeline.chance_rollout_rate(s)))
    claims = report.claims_table(models, labels=labels)
    if claims:
        show.say("\n" + claims)
    show.say(f"[demo] {out / 'results.json'}, {', '.join(str(p) for p in plots)}; "
             f"{results['wall_seconds']:.0f} s")
    return results
