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
    "rlpt_plugin.recipes.thinking:thinking_rlmt": PLACEHOLDERS,
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


def test_the_thinking_rlmt_plan(tmp_path, capsys):
    """64 prefixes x 8 thinking rollouts of up to 1,024 thought + 128 answer tokens, one similarity
    call per rollout, one GRPO row per rollout; the H100 estimate names the split."""
    assert rlpt(["train", "--recipe", "rlpt_plugin.recipes.thinking:thinking_rlmt", "--out", str(tmp_path),
                 "--dry-run", "--suffix-length", "128", "--gpus", "64", *PLACEHOLDERS]) == 0
    out = capsys.readouterr().out
    assert "512 x (128 + 1,024 thought) = 589,824 tokens" in out
    assert "similarity 512" in out and "grpo: 0" not in out
    assert "thinking_budget: 1024" in out and "selection: grpo" in out


def test_the_thinking_sft_plan(tmp_path, capsys):
    """Next-token only: 256 raw windows and 256 thought-augmented chunks per step, no judge."""
    from tests.rewrite.think_cases import small_think_store

    think, _ = small_think_store(tmp_path / "think")
    assert rlpt(["train", "--recipe", "rlpt_plugin.recipes.thinking:thinking_sft", "--out", str(tmp_path / "run"),
                 "--dry-run", *PLACEHOLDERS, f"rlpt.data.think_stores=[{think}]"]) == 0
    out = capsys.readouterr().out
    assert "think_sequences_per_step: 256" in out and "judge calls" in out and "rollouts                  none" in out
