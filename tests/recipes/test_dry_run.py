"""``rlpt train --dry-run`` for every recipe the plugin ships: validation, resolved config, plan."""

from __future__ import annotations

import pytest

from rlpt_plugin.cli import main as rlpt

# On this CPU machine: no FP8 (no Transformer Engine), no start checkpoint.
PLACEHOLDERS = ["rlpt.data.stores=[/nonexistent/store]", "rlpt.data.tokenizer=/nonexistent/tok",
                "mixed_precision=null", "checkpoint.pretrained_checkpoint=null"]
RECIPES = {
    "rlpt_plugin.recipes.tiny:tiny_config": [],
    "rlpt_plugin.recipes.world:world_config": ["--suffix-length", "16"],
    "rlpt_plugin.recipes.paper:paper_quality": PLACEHOLDERS,
    "rlpt_plugin.recipes.paper:paper_factuality": PLACEHOLDERS,
    "rlpt_plugin.recipes.paper:paper_safety": PLACEHOLDERS,
    "rlpt_plugin.recipes.paper:paper_from_scratch": PLACEHOLDERS,
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_every_recipe_dry_runs(recipe, tmp_path, capsys):
    assert rlpt(["train", "--recipe", recipe, "--out", str(tmp_path), "--dry-run", *RECIPES[recipe]]) == 0
    out = capsys.readouterr().out
    assert f"# resolved config of {recipe}" in out
    assert "rlpt:" in out and "workload per step" in out
    in_loop = "tiny" not in recipe  # the tiny recipe trains on ready-made synthetic groups
    assert ("judge rate needed" in out) == in_loop and ("rollouts                  none" in out) != in_loop


def test_the_paper_safety_plan(tmp_path, capsys):
    """K = 16 + original, round robin: C(17, 2) = 136 quality comparisons and 17 safety calls
    per prefix, 256 prefixes per step."""
    assert rlpt(["train", "--recipe", "rlpt_plugin.recipes.paper:paper_safety", "--out", str(tmp_path),
                 "--dry-run", *PLACEHOLDERS]) == 0
    out = capsys.readouterr().out
    assert "136 comparisons (round_robin)" in out
    assert f"{256 * (136 + 17):,}" in out  # judge calls per step


def test_dry_run_reports_every_error_at_once(tmp_path, capsys):
    code = rlpt(["train", "--recipe", "rlpt_plugin.recipes.world:world_config", "--out", str(tmp_path),
                 "--dry-run", "--suffix-length", "16", "rlpt.loss.beta=-1", "rlpt.judge.schedule=bogus",
                 "loss=nonexistent"])
    assert code == 2
    err = capsys.readouterr().err
    assert "loss=nonexistent" in err


def test_dry_run_names_bad_values(tmp_path, capsys):
    code = rlpt(["train", "--recipe", "rlpt_plugin.recipes.world:world_config", "--out", str(tmp_path),
                 "--dry-run", "--suffix-length", "16", "rlpt.loss.beta=-1", "rlpt.judge.schedule=bogus"])
    assert code == 2
    err = capsys.readouterr().err
    assert "rlpt.loss.beta" in err and "rlpt.judge.schedule" in err and "bogus" in err
