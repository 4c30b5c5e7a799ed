"""Config groups (rlpt_plugin/conf/*/*.yaml, rlpt_plugin/conf_groups.py): every option loads,
flattens to Hydra overrides that land in a valid RLPTConfig, the order is fixed, the user's
own overrides win, and mistakes are reported all at once with the available choices."""

from __future__ import annotations

import functools
import itertools
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from rlpt_plugin import conf_groups
from rlpt_plugin.conf_groups import GROUPS, available_groups, compose, expand_args, render, split_args
from rlpt_plugin.config import ConfigError, RLPTConfig

CONF = Path(conf_groups.__file__).parent / "conf"
EXPECTED = {
    "teacher": ["gpt_oss_120b", "llama31_8b"],
    "judge": ["all", "factuality", "quality", "safety"],
    "loss": ["dpo", "grpo", "lm_only", "rf_nll"],
    "candidates": ["k16", "k16_original", "k1_rewrite"],
    "world": ["demo"],
}
ALL_OPTIONS = [(g, o) for g, options in EXPECTED.items() for o in options]
# Top-level sections of Bridge's ConfigContainer a group file may also set.
BRIDGE_SECTIONS = {"model", "train", "optimizer", "scheduler", "dataset", "logger", "tokenizer",
                   "checkpoint", "dist", "rng", "ddp", "mixed_precision", "profiling"}
STORE = ["rlpt.data.source=store", "rlpt.data.stores=[/data/store]", "rlpt.data.tokenizer=/data/tok"]


@dataclass
class _Job:
    """The rlpt part of a job config, typed as in Bridge's container."""

    rlpt: RLPTConfig = field(default_factory=RLPTConfig)


def apply(overrides: list[str]) -> RLPTConfig:
    """Apply overrides the way Bridge's process_config_with_overrides does (Hydra's parser,
    struct mode), to a typed default job; keys outside ``rlpt`` must name Bridge sections."""
    ours = [o for o in overrides if o.lstrip("+~").startswith("rlpt.")]
    assert {o.split(".", 1)[0] for o in overrides if o not in ours} <= BRIDGE_SECTIONS, overrides
    cfg = OmegaConf.structured(_Job)
    OmegaConf.set_struct(cfg, True)
    ConfigLoaderImpl._apply_overrides_to_config(OverridesParser.create().parse_overrides(ours), cfg)
    return OmegaConf.to_object(cfg).rlpt


def yaml_leaves(group: str, option: str) -> dict[str, object]:
    """The file's leaves read independently of conf_groups: dotted key -> value."""
    def walk(node, prefix):
        for key, value in node.items():
            if isinstance(value, dict) and value:
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    return dict(walk(OmegaConf.to_container(OmegaConf.load(CONF / group / f"{option}.yaml")), ""))


def test_groups_and_options_are_the_documented_set():
    assert available_groups() == EXPECTED
    assert list(available_groups()) == list(GROUPS)
    # Every file sits where the package-data glob `conf/*/*.yaml` finds it, in a known group.
    files = [p.relative_to(CONF) for p in CONF.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert files and all(len(p.parts) == 2 and p.suffix == ".yaml" and p.parts[0] in GROUPS for p in files)


@pytest.mark.parametrize(("group", "option"), ALL_OPTIONS)
def test_every_option_flattens_applies_and_lands_in_a_valid_config(group, option):
    overrides = compose({group: option})
    leaves = yaml_leaves(group, option)
    assert [o.split("=", 1)[0] for o in overrides] == list(leaves)  # file order, one per leaf
    # A job names its data (there is no default source): the world option brings its own store,
    # every other option is applied to a job on the ready-made synthetic groups.
    overrides = ([] if group == "world" else ["rlpt.data.source=synthetic"]) + overrides
    cfg = apply(overrides)
    assert cfg.errors() == []
    for key, value in leaves.items():
        if key.startswith("rlpt."):
            landed = functools.reduce(getattr, key.split(".")[1:], cfg)
            assert landed == value and type(landed) is type(value), (key, landed, value)
    # OmegaConf.from_dotlist reads the same values (merged into the typed default).
    dotlist = OmegaConf.from_dotlist([o for o in overrides if o.startswith("rlpt.")])
    merged = OmegaConf.merge(OmegaConf.structured(_Job), dotlist)
    assert OmegaConf.to_object(merged).rlpt == cfg


@pytest.mark.parametrize("world", [None, "demo"])
def test_every_combination_is_valid_with_the_candidate_stage_on(world):
    """source=store + an RL loss makes the judge mandatory: a teacher (or the world) supplies it."""
    for teacher, judge, loss, cands in itertools.product(*(EXPECTED[g] for g in GROUPS[:4])):
        choices = {"teacher": teacher, "judge": judge, "loss": loss, "candidates": cands}
        if world:
            choices["world"] = world
        cfg = apply(compose(choices) + ([] if world else STORE))
        if (loss, cands) == ("grpo", "k1_rewrite"):  # one rollout per pool: no GRPO baseline, refused
            assert any("`rlpt.loss.grpo`" in e and "rlpt.candidates.num_rollouts" in e for e in cfg.errors())
            continue
        assert cfg.errors() == [], choices
        assert cfg.data.source == "store"
        assert cfg.judge.backend == ("world" if world else "openai")
        assert cfg.loss.has_rl_terms() == (loss != "lm_only")


def test_validation_is_live_without_a_teacher():
    errors = apply(compose({"judge": "safety", "loss": "dpo"}) + STORE).errors()
    assert any("rlpt.judge.endpoints" in e for e in errors) and any("rlpt.judge.model" in e for e in errors)
    assert apply(compose({"judge": "safety", "loss": "dpo", "teacher": "gpt_oss_120b"}) + STORE).errors() == []
    # The world's oracle needs no endpoints; the LM baseline needs no judge at all.
    assert apply(compose({"loss": "dpo", "world": "demo"})).errors() == []
    assert apply(compose({"loss": "lm_only"}) + STORE).errors() == []


def test_the_paper_settings():
    one = lambda g, o: apply(compose({g: o}))  # noqa: E731
    assert one("teacher", "gpt_oss_120b").judge.samples == 1
    small = one("teacher", "llama31_8b").judge
    assert small.samples == 5 and "Llama-3.1-8B" in small.model
    assert all(e.startswith("http://judge-") and e.endswith("/v1") for e in small.endpoints)
    axes = {o: (c.judge.quality, c.judge.safety, c.judge.factuality)
            for o in EXPECTED["judge"] for c in [one("judge", o)]}
    assert axes == {"quality": (1, 0, 0), "safety": (1, 1, 0), "factuality": (1, 0, 1), "all": (1, 1, 1)}
    assert {one("judge", o).judge.schedule for o in EXPECTED["judge"]} == {"round_robin"}
    dpo, rf, lm = (one("loss", o).loss for o in ("dpo", "rf_nll", "lm_only"))
    late = dpo.weights().at(10**6)  # constant weights: no ramp of a recipe leaks through
    assert dpo.selection == "dpo" and (late.lm, late.dpo, late.rf_nll, dpo.beta) == (1.0, 1.0, 0.0, 0.1)
    assert rf.selection == "rf_nll" and (rf.dpo.start, rf.rf_nll.start, rf.lm.start) == (0.0, 1.0, 0.0)
    assert not lm.has_rl_terms() and lm.lm.start == 1.0
    pools = {o: (c.num_rollouts, c.original, c.rewrite, c.rollouts, c.temperature, c.top_p)
             for o in EXPECTED["candidates"] for c in [one("candidates", o).candidates]}
    assert pools == {"k16": (16, False, False, True, 1.0, 1.0), "k16_original": (16, True, False, True, 1.0, 1.0),
                     "k1_rewrite": (1, False, True, True, 1.0, 1.0)}
    w = one("world", "demo")
    assert (w.judge.backend, w.data.tokenizer, w.data.source) == ("world", "world", "store")


def test_split_args_separates_group_choices_from_overrides():
    args = ["rlpt.loss.beta=0.05", "loss=rf_nll", "+rlpt.extra=1", "~rlpt.judge.cache", "judge=safety",
            "model.tensor_model_parallel_size=2", "optimizer.lr=1e-4", "foo=bar", "loss.beta=1",
            "+loss=dpo", "world", "rlpt.judge.endpoints=[http://a:1/v1,http://b:1/v1]", "loss=dpo"]
    choices, overrides = split_args(args)
    assert choices == {"judge": "safety", "loss": "dpo"}  # a repeated group: the last wins
    assert list(choices) == ["judge", "loss"]
    assert overrides == ["rlpt.loss.beta=0.05", "+rlpt.extra=1", "~rlpt.judge.cache",
                         "model.tensor_model_parallel_size=2", "optimizer.lr=1e-4", "foo=bar",
                         "loss.beta=1", "+loss=dpo", "world", "rlpt.judge.endpoints=[http://a:1/v1,http://b:1/v1]"]
    assert split_args([]) == ({}, [])
    assert split_args(["teacher="]) == ({"teacher": ""}, [])  # then compose reports it


def test_order_is_deterministic_group_order_then_file_order():
    forward = {g: EXPECTED[g][0] for g in GROUPS}
    backward = dict(reversed(list(forward.items())))
    out = compose(forward)
    assert out == compose(backward) == compose(dict(forward))
    expected = [line for g in GROUPS for line in compose({g: forward[g]})]
    assert out == expected
    assert compose({}) == []
    assert compose({"loss": "dpo"})[:2] == ["rlpt.loss.selection=dpo", "rlpt.loss.lm.start=1.0"]


def test_unknown_groups_and_options_are_reported_together_with_the_choices():
    with pytest.raises(ConfigError) as info:
        compose({"teachr": "gpt_oss_120b", "loss": "ppo", "judge": "safty", "candidates": "k16"})
    assert len(info.value.errors) == 3
    message = str(info.value)
    assert "unknown config group `teachr`; the groups are teacher, judge, loss, candidates, world" in message
    assert "`loss=ppo`: no such option; the options of `loss` are dpo, grpo, lm_only, rf_nll" in message
    assert "`judge=safty`: no such option; the options of `judge` are all, factuality, quality, safety" in message
    with pytest.raises(ConfigError, match="`teacher=`: no such option"):
        expand_args(["teacher="])


def test_broken_files_are_named(tmp_path, monkeypatch):
    (tmp_path / "loss").mkdir()
    (tmp_path / "loss" / "bad.yaml").write_text("rlpt: {loss: [unclosed\n")
    (tmp_path / "judge").mkdir()
    (tmp_path / "judge" / "scalar.yaml").write_text("3\n")
    monkeypatch.setattr(conf_groups, "_conf_dir", lambda: tmp_path)
    assert available_groups() == {"teacher": [], "judge": ["scalar"], "loss": ["bad"], "candidates": [], "world": []}
    with pytest.raises(ConfigError) as info:
        compose({"loss": "bad", "judge": "scalar"})
    assert [e.split(":")[0] for e in info.value.errors] == ["config group file judge/scalar.yaml",
                                                            "config group file loss/bad.yaml"]


def test_the_command_line_wins_over_the_group_files():
    args = ["rlpt.loss.beta=0.05", "loss=dpo", "teacher=gpt_oss_120b", "world=demo",
            "rlpt.judge.samples=3", "candidates=k16_original", "rlpt.candidates.num_rollouts=8"]
    out = expand_args(args)
    groups = compose({"teacher": "gpt_oss_120b", "loss": "dpo", "candidates": "k16_original", "world": "demo"})
    assert out == groups + ["rlpt.loss.beta=0.05", "rlpt.judge.samples=3", "rlpt.candidates.num_rollouts=8"]
    cfg = apply(out)
    assert cfg.loss.beta == 0.05  # dpo.yaml says 0.1
    assert cfg.judge.samples == 3  # gpt_oss_120b.yaml says 1
    assert cfg.candidates.num_rollouts == 8 and cfg.candidates.original  # the rest of the file stays
    assert cfg.judge.backend == "world"  # a later group beats an earlier one on a shared key
    assert expand_args(["rlpt.loss.beta=0.05"]) == ["rlpt.loss.beta=0.05"]


@pytest.mark.parametrize("value", [
    "plain", "with space", "http://judge-0:8000/v1", "a,b", "[x]", "{y}", "quote'inside", 'double"q',
    "back\\slash", "ends\\", "\\'", "${not.interpolated}", "true", "False", "null", "NaN", "inf", "yes",
    "1.5", "1e-4", "12", "", "~", "=eq", "ünïcode", "-dash", "a=b",
])
def test_strings_survive_the_hydra_parser_unchanged(value):
    override = f"rlpt.judge.model={render(value)}"
    assert apply([override]).judge.model == value, override
    assert apply([f"rlpt.data.stores=[{render(value)},{render(value)}]"]).data.stores == [value, value]


def test_other_values_render_in_hydra_syntax():
    assert [render(v) for v in (None, True, False, 3, -2, 0.1, 5e-6, [1, "a b", None], [], {"k": [1, 2]})] == [
        "null", "true", "false", "3", "-2", "0.1", "5e-06", "[1,'a b',null]", "[]", "{k:[1,2]}"]
    cfg = apply(["rlpt.loss.beta=" + render(5e-6), "rlpt.judge.cache=" + render(None),
                 "rlpt.candidates.share_prefill=" + render(False)])
    assert (cfg.loss.beta, cfg.judge.cache, cfg.candidates.share_prefill) == (5e-6, None, False)
    with pytest.raises(TypeError):
        render(object())


def test_the_module_imports_neither_torch_nor_megatron():
    code = ("import sys; from rlpt_plugin.conf_groups import expand_args; "
            "expand_args(['loss=dpo', 'judge=all', 'world=demo', 'rlpt.loss.beta=0.2']); "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'megatron')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bridge_applies_the_composed_overrides(tmp_path):
    from rlpt_plugin.megatron.host import launch  # the real launcher path (Bridge's override processing)

    cfg = launch.build_config("rlpt_plugin.recipes.world:world_config", tmp_path, expand_args(
        ["world=demo", "judge=safety", "loss=rf_nll", "candidates=k16_original", "rlpt.loss.beta=0.05"]))
    r = cfg.rlpt
    assert (r.judge.backend, r.judge.world_entities, r.data.stores) == ("world", 100, ["runs/demo/store"])
    assert (r.judge.safety, r.judge.factuality, r.loss.selection, r.loss.beta) == (1.0, 0.0, "rf_nll", 0.05)
    assert (r.candidates.num_rollouts, r.candidates.original) == (16, True)
    cfg = launch.build_config("rlpt_plugin.recipes.tiny:tiny_config", tmp_path / "t",
                              expand_args(["teacher=llama31_8b", "judge=all", "loss=dpo"]))
    assert cfg.rlpt.judge.endpoints == ["http://judge-0:8000/v1"] and cfg.rlpt.judge.samples == 5
