"""bench/evidence_sweep.py's aggregation: means, sample sd, paired margins, arms missing from cells."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
spec = importlib.util.spec_from_file_location("evidence_sweep", ROOT / "bench" / "evidence_sweep.py")
sweep = importlib.util.module_from_spec(spec)
spec.loader.exec_module(sweep)  # type: ignore[union-attr]


def _model(q: float, f: float, s: float) -> dict:
    part = {"quality_win_rate": q, "factuality": f, "safety": s}
    return {**part, "heldout_nll": 1.0, "count": 10, "ordinary": {**part, "count": 5},
            "systematic": {**part, "count": 5}}


def _cell(shift: float, with_variant: bool) -> dict:
    models = {"start": _model(0.5, 0.5, 0.5), "baseline": _model(0.5 + shift, 0.5, 0.5),
              "baseline_compute": _model(0.5, 0.5, 0.5), "sft_rewrites": _model(0.5, 0.6, 0.6),
              "sip": _model(0.6 + 2 * shift, 0.7, 0.8)}
    if with_variant:
        models["v"] = _model(0.6, 0.6, 0.6)
    return {"models": models, "rollout_chosen": {"sip": {"first": 0.2, "last": 0.4 + shift, "mean": 0.3}},
            "chance": {"sip": 0.8}, "step_s": {"sip": 2.0, "baseline": 0.1}}


def test_summary_means_sd_and_paired_margins(capsys):
    cells = {"a": _cell(0.0, True), "b": _cell(0.1, False), "c": _cell(0.2, True)}
    arms = ["start", "baseline", "baseline_compute", "sft_rewrites", "sip", "v"]
    summary = sweep.summarize(cells, arms, ["sip", "v"])
    q = summary["arms"]["all"]["baseline"]["quality_win_rate"]
    assert q["mean"] == pytest.approx(0.6) and q["sd"] == pytest.approx(0.1) and q["n"] == 3
    m = summary["margins"]["systematic"]["sip - baseline"]["quality_win_rate"]
    assert m["values"] == pytest.approx([0.1, 0.2, 0.3]) and m["sd"] == pytest.approx(0.1)
    assert summary["margins"]["all"]["sip - sft_rewrites"]["safety"]["mean"] == pytest.approx(0.2)
    assert summary["arms"]["all"]["v"]["safety"]["n"] == 2  # only the cells that trained it
    assert summary["margins"]["all"]["v - sip"]["factuality"]["mean"] == pytest.approx(-0.1)
    assert summary["rollout_chosen"]["sip"]["last"]["mean"] == pytest.approx(0.5)
    sweep.print_summary(summary, cells, arms)
    text = capsys.readouterr().out
    assert "sip - baseline" in text and "(n=2)" in text and "chance 0.800" in text
    lines = {line.split("  ")[0]: line for line in text.splitlines() if " - " in line.split("  ")[0]}
    # quality margin 20 +- 10 is not more than twice its sd; safety vs SFT (20 +- 0) is
    assert "+20.0 +- 10.0   " in lines["sip - baseline"] and "+20.0 +-  0.0 *" in lines["sip - sft_rewrites"]


def test_the_target_claims_are_averaged_per_arm_and_group(capsys):
    cells = {"a": _cell(0.0, False), "b": _cell(0.1, False)}
    for i, cell in enumerate(cells.values()):
        for name, model in cell["models"].items():
            true = 0.2 + 0.2 * i + (0.3 if name == "sip" else 0.0)
            model["target_claims"] = {"myth": {"true": true, "myth": 0.8 - true, "false": 0.2, "none": 0.0,
                                               "count": 30}}
    arms = ["start", "baseline", "baseline_compute", "sft_rewrites", "sip"]
    summary = sweep.summarize(cells, arms, ["sip"])
    assert summary["target_claims"]["sip"]["myth"]["true"]["mean"] == pytest.approx(0.6)
    assert summary["target_claims"]["baseline"]["myth"]["myth"]["mean"] == pytest.approx(0.5)
    assert "ordinary" not in summary["target_claims"]["sip"]
    sweep.print_summary(summary, cells, arms)
    assert "myth: 60.0 / 20.0 / 20.0 / 0.0" in capsys.readouterr().out


def test_settings_and_variants_parse():
    assert sweep.parse_settings(["steps=5", "rewrite=false", "beta=0.5"]) == {"steps": 5, "rewrite": False,
                                                                              "beta": 0.5}
    assert sweep.parse_variant("no_rw:rewrite=false,rollouts=8") == ("no_rw", ["rewrite=false", "rollouts=8"])
    assert sweep.parse_variant("qs:reward=quality,safety,beta=0.5") == ("qs", ["reward=quality,safety", "beta=0.5"])
    # settings whose default depends on the task (float | None, int | None) parse too
    assert sweep.parse_settings(["defect_rate=0.07", "start_steps=900", "lr=none"]) == {
        "defect_rate": 0.07, "start_steps": 900, "lr": None}
    with pytest.raises(SystemExit):
        sweep.parse_settings(["nope=1"])
    with pytest.raises(SystemExit):
        sweep.parse_variant("no_colon")
