"""The demo's pure pieces: settings, table, curves, SVG plots."""

from __future__ import annotations

import argparse
import math
import xml.etree.ElementTree as ET

import pytest

from rlpt_plugin.config import ConfigError
from rlpt_plugin.demo import report
from rlpt_plugin.demo.settings import DemoSettings, add_arguments, from_args
from rlpt_plugin.demo.svg import line_chart, moving_average

MODEL = {"quality_win_rate": 0.5, "factuality": 0.25, "safety": 1.0, "heldout_nll": 1.2345,
         "systematic": {"quality_win_rate": 0.5, "factuality": 0.0, "safety": 1.0}}


def test_table_has_one_row_per_model_in_percent():
    text = report.table({"start": MODEL, "sip": {**MODEL, "safety": 0.875}})
    lines = text.splitlines()
    assert len(lines) == 3 and "held-out NLL" in lines[0]
    assert lines[1].split()[-4:] == ["50.0", "25.0", "100.0", "1.234"]
    assert "87.5" in lines[2] and "SIP, online DPO" in lines[2]
    assert "held-out NLL" not in report.table({"start": MODEL}, "systematic")
    assert "SIP, RF-NLL" in report.table({"sip": MODEL}, labels={"sip": report.LABELS["rf_nll"]})


def test_curves_order_steps_and_drop_repeats_of_a_resumed_run():
    records = [{"step": 1, "rollout_chosen_rate": 0.5}, {"step": 0, "rollout_chosen_rate": 0.25},
               {"step": 1, "rollout_chosen_rate": 0.75}]
    c = report.curves(records)
    assert c["rollout_chosen_rate"] == [0.25, 0.75]
    assert all(math.isnan(v) for v in c["lm_nll"])


def test_moving_average_skips_nan():
    assert moving_average([1.0, float("nan"), 3.0], 2) == [1.0, 1.0, 3.0]
    assert math.isnan(moving_average([float("nan")], 3)[0])


def test_line_chart_is_valid_svg_with_a_legend_entry_per_series(tmp_path):
    svg = line_chart({"a": [(0, 0.0), (1, 1.0)], "b <&>": [(0, 0.5), (1, float("nan")), (2, 0.2)]},
                     title="t", xlabel="step", ylabel="y")
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == 3  # b is split by its NaN
    assert "b &lt;&amp;&gt;" in svg
    with pytest.raises(ValueError, match="no finite points"):
        line_chart({"a": [(0, float("nan"))]}, title="t", xlabel="x", ylabel="y")


def test_write_plots(tmp_path):
    runs = {"sip": {k: [0.1 * i for i in range(5)] for k in report.CURVES}}
    paths = report.write_plots(tmp_path, runs)
    assert [p.name for p in paths] == ["rollout_chosen_rate.svg", "metrics.svg"]
    for p in paths:
        ET.fromstring(p.read_text())


def test_settings_flags_round_trip_and_validate():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--rollouts", "8", "--loss", "rf_nll", "--judge-noise", "0.1", "--rf-nll"])
    s = from_args(args)
    assert (s.rollouts, s.loss, s.judge_noise, s.rf_nll) == (8, "rf_nll", 0.1, True)
    assert from_args(parser.parse_args([])) == DemoSettings()
    with pytest.raises(ConfigError) as err:
        DemoSettings(rollouts=0, loss="ppo", judge_noise=1.0, steps=0).validate()
    text = str(err.value)
    for needle in ("--rollouts", "--loss", "--judge-noise", "--steps"):
        assert needle in text
    assert "K: rollouts per prefix" in parser.format_help()  # help comes from the field docs


def test_a_setting_parses_from_key_equals_value_with_its_field_type():
    from rlpt_plugin.demo.settings import parse_setting

    assert parse_setting("rollouts=6") == ("rollouts", 6)
    assert parse_setting("judge_noise=0.2") == ("judge_noise", 0.2)
    assert parse_setting("rewrite=false") == ("rewrite", False) and parse_setting("rewrite=yes") == ("rewrite", True)
    assert parse_setting("defect_rate=0.07") == ("defect_rate", 0.07)  # float | None: the task's default
    assert parse_setting("start_steps=none") == ("start_steps", None)
    with pytest.raises(ValueError, match="unknown demo setting 'nope'"):
        parse_setting("nope=1")
    with pytest.raises(ValueError):
        parse_setting("rollouts=six")


def test_the_people_split_is_checked_and_only_for_the_reasoning_task():
    DemoSettings(task="reasoning", trained_share=0.6, rl_share=0.15).validate()
    for bad in (dict(task="reasoning", trained_share=0.7, rl_share=0.3), dict(task="reasoning", rl_share=0.0)):
        with pytest.raises(ConfigError, match="--trained-share"):
            DemoSettings(**bad).validate()
    with pytest.raises(ConfigError, match="need `--task reasoning`"):
        DemoSettings(trained_share=0.6).validate()


def test_each_task_sets_its_own_world_and_schedule_unless_a_flag_does():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    sip, reasoning = (from_args(parser.parse_args(["--task", task])) for task in ("sip", "reasoning"))
    assert (sip.defect_rate, sip.systematic_fraction, sip.start_steps, sip.lr) == (0.04, 0.3, 600, 3e-4)
    assert (reasoning.defect_rate, reasoning.systematic_fraction, reasoning.start_steps, reasoning.lr) == \
        (0.0, 0.0, 1500, 1e-3)
    assert DemoSettings() == sip and DemoSettings(task="reasoning") == reasoning
    mine = from_args(parser.parse_args(["--task", "reasoning", "--defect-rate", "0.04", "--start-steps", "600"]))
    assert (mine.defect_rate, mine.start_steps, mine.lr) == (0.04, 600, 1e-3)
    assert "(sip 0.04, reasoning 0.0)" in " ".join(parser.format_help().split())


def _sliced(q: float, n: int = 200) -> dict:
    part = {"quality_win_rate": q, "factuality": 0.5, "safety": 0.75}
    return {**part, "heldout_nll": 1.0, "count": n, "ordinary": {**part, "count": n // 2},
            "systematic": {**part, "count": n - n // 2}}


def test_tables_report_every_slice_with_its_count():
    text = report.tables({"start": _sliced(0.5), "sip": _sliced(0.625)})
    assert "all held-out prefixes, 200 prefixes:" in text
    assert "ordinary contexts" in text and "systematic contexts" in text and text.count(", 100 prefixes:") == 2
    assert text.count("62.5") == 3 and text.count("held-out NLL") == 1
    no_sys = _sliced(0.5)
    no_sys["systematic"] = {}
    assert "systematic" not in report.tables({"start": no_sys})


def test_claims_table_gives_each_group_in_percent_with_its_count():
    def claims(true: float) -> dict:
        return {"ordinary": {"true": true, "myth": 0.0, "false": 1 - true, "none": 0.0, "count": 100},
                "myth": {"true": 0.25, "myth": 0.5, "false": 0.125, "none": 0.125, "count": 36}}

    text = report.claims_table({"start": {"target_claims": claims(0.5)}, "sip": {"target_claims": claims(0.75)}})
    lines = text.splitlines()
    assert "ordinary prefixes (100)" in lines[1] and "myth contexts (36)" in lines[1]
    assert lines[2].startswith("start model") and "50 / 0 / 50 / 0" in lines[2] and "25 / 50 / 12 / 12" in lines[2]
    assert "75 / 0 / 25 / 0" in lines[3] and "SIP, online DPO" in lines[3]
    assert report.claims_table({"start": MODEL}) == ""  # judged before the breakdown existed


def test_rollout_rate_line_states_chance():
    from rlpt_plugin.demo.pipeline import chance_rollout_rate

    line = report.rollout_rate_line([0.2] * 10 + [0.6] * 10, 0.8)
    assert "0.20 over the first 2 steps, 0.60 over the last 2" in line and "chance 0.80" in line
    assert chance_rollout_rate(DemoSettings(rollouts=8, rewrite=True)) == 0.8
    assert chance_rollout_rate(DemoSettings(rollouts=8, rewrite=False)) == 8 / 9
    assert chance_rollout_rate(DemoSettings(rollouts=4, rollouts_only=True)) == 1.0


def test_pool_and_control_flags():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    s = from_args(parser.parse_args(["--no-rewrite", "--controls", "--control-factor", "9"]))
    assert (s.rewrite, s.controls, s.control_factor) == (False, True, 9)
    d = DemoSettings()
    assert d.rewrite and d.judge_noise > 0 and d.teacher_knowledge < 1  # the honest teacher by default
    with pytest.raises(ConfigError, match="--teacher-knowledge"):
        DemoSettings(teacher_knowledge=1.5).validate()
