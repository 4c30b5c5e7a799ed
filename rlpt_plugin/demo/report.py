"""The demo's outputs: the paper-shaped table, ``results.json`` and the two SVG plots."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlpt_plugin.demo.svg import line_chart, moving_average
from rlpt_plugin.world.evaluate import CLAIMS

LABELS = {"start": "start model", "baseline": "next-token (baseline)", "sip": "SIP, online DPO",
          "rf_nll": "SIP, RF-NLL", "grpo": "SIP, Dr. GRPO", "baseline_compute": "next-token, SIP's tokens",
          "sft_rewrites": "next-token on rewrites"}
#: The slices every table reports: (key in a model's results or None for all, title).
PARTS = ((None, "all held-out prefixes"),
         ("ordinary", "ordinary contexts (the corpus's most frequent continuation is good)"),
         ("systematic", "systematic contexts (the corpus's most frequent continuation is bad)"))
AXES = ("quality_win_rate", "factuality", "safety")
#: Per-step metrics kept in results.json and plotted.
CURVES = ("rollout_chosen_rate", "lm_nll", "dpo_accuracy", "rf_nll", "score_safety_rollout",
          "score_factuality_rollout", "score_quality_rollout", "grpo_loss")


def table(models: Mapping[str, Mapping[str, Any]], part: str | None = None,
          labels: Mapping[str, str] | None = None) -> str:
    """Rows: models; columns as in the paper's main table (rates in %). ``part``: systematic or
    ordinary prefixes only (no NLL column); ``labels`` override :data:`LABELS`."""
    names = {**LABELS, **(labels or {})}
    head = f"{'':<24}{'quality win rate':>18}{'factuality':>12}{'safety':>9}"
    lines = [head + ("" if part else f"{'held-out NLL':>14}")]
    for name, result in models.items():
        r = result[part] if part else result
        cells = "".join(f"{100 * r[a]:>{w}.1f}" for a, w in zip(AXES, (18, 12, 9)))
        lines.append(f"{names.get(name, name):<24}{cells}" + ("" if part else f"{result['heldout_nll']:>14.3f}"))
    return "\n".join(lines)


def tables(models: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """:func:`table` for every slice of :data:`PARTS`, each titled with its prefix count."""
    blocks = []
    for part, title in PARTS:
        first = next(iter(models.values()))
        count = (first if part is None else first.get(part, {})).get("count")
        if part is not None and not count:
            continue  # a world without systematic contexts (or without ordinary ones)
        blocks.append(f"{title}, {count if count is not None else '?'} prefixes:\n{table(models, part, labels)}")
    return "\n\n".join(blocks)


def claims_table(models: Mapping[str, Mapping[str, Any]], labels: Mapping[str, str] | None = None) -> str:
    """What each model's continuations claim about the fact a prefix asks for (% of prefixes), on
    ordinary prefixes and on those aimed at a systematic myth: the truth, the corpus's myth (an
    ordinary prefix can ask for a fact with a myth too), another value, nothing. Empty when no
    model has the breakdown."""
    names = {**LABELS, **(labels or {})}
    first = next(iter(models.values()), {}).get("target_claims") or {}
    if not first:
        return ""
    groups = [g for g in ("ordinary", "myth") if g in first]
    titles = {"ordinary": "ordinary prefixes", "myth": "myth contexts"}
    head = "".join(f"{titles[g] + ' (' + str(first[g]['count']) + ')':>28}" for g in groups)
    lines = ["the claim about the fact a prefix asks for, % of prefixes (true / myth / other value / none):",
             f"{'':<24}{head}"]
    for name, result in models.items():
        claims = result["target_claims"]
        lines.append(f"{names.get(name, name):<24}" + "".join(
            f"{' / '.join(f'{100 * claims[g][k]:.0f}' for k in CLAIMS):>28}" for g in groups))
    return "\n".join(lines)


def rollout_rate_line(curve: Sequence[float], chance: float) -> str:
    """The rollout-chosen rate over the first and last tenth of the steps against chance."""
    values = [v for v in curve if v == v]
    if not values:
        return "rollout-chosen rate: none (no pool had a pair, or the update rule chooses no candidate)"
    tenth = max(1, len(values) // 10)
    first, last = sum(values[:tenth]) / tenth, sum(values[-tenth:]) / tenth
    return (f"rollout-chosen rate (share of pairs whose chosen is a rollout): {first:.2f} over the first "
            f"{tenth} steps, {last:.2f} over the last {tenth}; chance {chance:.2f} (a judge that cannot tell "
            f"the candidates apart; exact ties go to the corpus text, so equally good rollouts score below it)")


def curves(records: Sequence[Mapping[str, float]]) -> dict[str, list[float]]:
    """Per-step values of :data:`CURVES` (NaN where a step lacks one), steps in order."""
    ordered = sorted({int(r["step"]): r for r in records}.items())  # a resumed run may repeat steps
    return {k: [float(r.get(k, float("nan"))) for _, r in ordered] for k in CURVES}


def write_plots(out: Path, runs: Mapping[str, Mapping[str, list[float]]], window: int = 10) -> list[Path]:
    """``rollout_chosen_rate.svg`` (the curriculum curve) and ``metrics.svg`` (per-step metrics
    of each SIP run; moving averages over ``window`` steps)."""
    def pts(values: list[float]) -> list[tuple[float, float]]:
        return list(enumerate(moving_average(values, window)))

    written = []
    # A run that chooses no candidate (Dr. GRPO) has no rollout-chosen rate: no curve for it.
    chosen = {LABELS.get(n, n): pts(c["rollout_chosen_rate"]) for n, c in runs.items()
              if any(v == v for v in c["rollout_chosen_rate"])}
    if chosen:
        path = out / "rollout_chosen_rate.svg"
        path.write_text(line_chart(chosen, title=f"rollout-chosen rate ({window}-step mean)", xlabel="step",
                                   ylabel="share of pools whose chosen candidate is a rollout", y_range=(0, 1)))
        written.append(path)
    series = {}
    for name, c in runs.items():
        for key in CURVES[1:]:
            if any(v == v for v in c[key]):
                series[f"{name}: {key}"] = pts(c[key])
    path = out / "metrics.svg"
    path.write_text(line_chart(series, title=f"SIP metrics over steps ({window}-step mean)", xlabel="step",
                               ylabel="value"))
    written.append(path)
    return written


def write_results(out: Path, results: Mapping[str, Any]) -> Path:
    path = out / "results.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=1, sort_keys=True))
    tmp.replace(path)
    return path
