"""The paper's recipes (rlpt_plugin/recipes/paper.py): the paper's numbers land in the config,
FP8 without Transformer Engine is refused, and each recipe trains on CPU once shrunk.

Config checks run in the pytest process (they build configs only). The four tiny runs share
ONE spawned process (Bridge mutates process state; a Bridge process costs ~12 s to start), a
rewritten store made with ``rlpt rewrite`` against a loopback teacher, and one loopback judge
per recipe, so each run's judge traffic can be checked on its own.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host import launch, validation
from tests.bridge.test_in_loop import quality_judge, rewritten_store
from tests.distributed.harness import run_distributed
from tests.teacher.loopback_server import LoopbackServer

pytestmark = [pytest.mark.bridge, pytest.mark.distributed]

MODULE = "rlpt_plugin.recipes.paper"
RECIPES = ("paper_quality", "paper_factuality", "paper_safety", "paper_from_scratch")
ENDPOINTS = "rlpt.judge.endpoints=[http://judge-0:8000/v1,http://judge-1:8000/v1]"
NO_FP8 = "mixed_precision=bf16_mixed"  # the paper's GPU run without FP8: valid on any machine

# The shrink that makes every paper recipe train on a CPU (see the recipe module's docstring).
TINY = ["model.num_layers=2", "model.hidden_size=64", "model.ffn_hidden_size=128",
        "model.num_attention_heads=4", "model.seq_length=32", "mixed_precision=null",
        "rlpt.data.groups_per_step=2", "train.global_batch_size=4", "train.train_iters=3",
        "checkpoint.pretrained_checkpoint=null"]
STEPS = 3
# Only for CI time, not needed to run: no checkpoint writes (the largest cost of a tiny run:
# ~6 s each) and, where the paper's K=16 is already covered by paper_safety, K=4 (the loopback
# judge answers ~100 requests/s on 2 cores; round robin over 16 rollouts is 120 per prefix).
FAST = ["checkpoint.save=null", "checkpoint.load=null"]
FEWER_ROLLOUTS = {"paper_quality": 4, "paper_factuality": 4}

# What each setting must be: (K, original, rewrite, axes, selection, steps, lr, warmup, rows/prefix)
PAPER = {
    "paper_quality": (16, False, False, {"quality"}, "dpo", 2000, 5e-6, 100, 2),
    "paper_factuality": (16, False, False, {"quality", "factuality"}, "dpo", 2000, 5e-6, 100, 2),
    "paper_safety": (16, True, False, {"quality", "safety"}, "dpo", 2000, 5e-6, 100, 2),
    "paper_from_scratch": (1, False, True, {"quality", "safety"}, "rf_nll", 21000, 5e-4, 2000, 1),
}


@pytest.mark.parametrize("name", RECIPES)
def test_paper_numbers_land_and_validate(tmp_path, name):
    k, original, rewrite, axes, selection, steps, lr, warmup, rows = PAPER[name]
    start = [] if name == "paper_from_scratch" else [f"checkpoint.pretrained_checkpoint={tmp_path}"]
    cfg = launch.build_config(f"{MODULE}:{name}", tmp_path, [ENDPOINTS, NO_FP8, *start])
    m, t, r = cfg.model, cfg.train, cfg.rlpt
    # The policy: Llama-2 architecture, 1.4B.
    assert (m.num_layers, m.hidden_size, m.num_attention_heads, m.ffn_hidden_size) == (24, 2048, 16, 5504)
    assert (m.vocab_size, m.seq_length, m.normalization, m.position_embedding_type) == (32000, 2048, "RMSNorm", "rope")
    assert m.gated_linear_unit and not m.add_bias_linear and not m.share_embeddings_and_output_weights
    h, layers = m.hidden_size, m.num_layers  # untied embeddings, attention, SwiGLU, 2 norms per layer
    params = 2 * m.vocab_size * h + layers * (4 * h * h + 3 * h * m.ffn_hidden_size + 2 * h) + h
    assert 1.3e9 < params < 1.45e9, params
    # 256 prefixes per step, packed rows = rows per prefix x 256, whole prefixes per micro-batch.
    assert r.data.groups_per_step == 256
    assert t.global_batch_size == rows * 256 and t.micro_batch_size % rows == 0
    assert (t.global_batch_size // t.micro_batch_size) % 64 == 0  # 8 x 8 GPUs, DP 64
    # Schedule: cosine to 0.1 x peak after linear warmup.
    assert t.train_iters == steps and cfg.optimizer.lr == lr
    assert math.isclose(cfg.optimizer.min_lr, 0.1 * lr)
    assert cfg.scheduler.lr_decay_style == "cosine" and cfg.scheduler.lr_warmup_iters == warmup
    # Pool, judge, update.
    c = r.candidates
    assert (c.num_rollouts, c.rollouts, c.original, c.rewrite) == (k, True, original, rewrite)
    assert (c.temperature, c.top_p) == (1.0, 1.0)
    assert {a for a in ("quality", "safety", "factuality") if getattr(r.judge, a) > 0} == axes
    assert all(getattr(r.judge, a) == 1.0 for a in axes)  # equal weights
    assert r.judge.endpoints == ["http://judge-0:8000/v1", "http://judge-1:8000/v1"]
    assert r.judge.backend == "openai" and r.judge.model == "openai/gpt-oss-120b"
    assert r.judge.schedule == "round_robin"
    assert r.loss.selection == selection and r.loss.lm.start == 0.0 and not r.data.lm_on_window
    assert (r.loss.dpo.start, r.loss.rf_nll.start) == ((1.0, 0.0) if selection == "dpo" else (0.0, 1.0))
    assert r.data.source == "store" and r.data.stores and r.data.tokenizer
    # Layout for 64 GPUs: TP1 PP1 CP1, the rest data parallel, distributed optimizer.
    assert (m.tensor_model_parallel_size, m.pipeline_model_parallel_size, m.context_parallel_size) == (1, 1, 1)
    assert cfg.optimizer.use_distributed_optimizer and cfg.ddp.use_distributed_optimizer
    # Continual runs start from a checkpoint, from-scratch from random weights.
    assert (cfg.checkpoint.pretrained_checkpoint is None) == (name == "paper_from_scratch")
    # the recipe's placeholder start checkpoint does not exist here: an error, not random weights
    if name != "paper_from_scratch":
        with pytest.raises(ConfigError, match="pretrained_checkpoint"):
            launch.build_config(f"{MODULE}:{name}", tmp_path, [ENDPOINTS, NO_FP8])
    assert cfg.mixed_precision == "bf16_mixed"


@pytest.mark.parametrize("name", RECIPES)
def test_hardware_choices_on_this_machine(tmp_path, name):
    """Without CUDA/TE: gloo, Bridge's local layer spec, fusions off; FP8 current scaling is
    still what the recipe asks for (it is never dropped silently)."""
    import torch
    from megatron.bridge.models.gpt_provider import local_layer_spec, transformer_engine_layer_spec

    from rlpt_plugin.recipes import paper

    cfg = getattr(paper, name)(tmp_path)
    assert cfg.mixed_precision == "bf16_with_fp8_current_scaling_mixed"
    te, cuda = validation.transformer_engine_available(), torch.cuda.is_available()
    m = cfg.model
    assert m.transformer_layer_spec is (transformer_engine_layer_spec if te else local_layer_spec)
    assert cfg.dist.distributed_backend == ("nccl" if cuda else "gloo")
    if not cuda:
        assert not any((m.bias_activation_fusion, m.bias_dropout_fusion, m.masked_softmax_fusion,
                        m.persist_layer_norm, m.apply_rope_fusion, m.gradient_accumulation_fusion,
                        m.cross_entropy_loss_fusion, m.batch_p2p_comm))


def test_the_tiny_override_list_is_the_documented_one():
    from rlpt_plugin.recipes import paper

    documented = " ".join(paper.__doc__.split("**Tiny CPU run.**")[1].split("::")[1].split())
    assert documented.startswith(" ".join(TINY)), documented


def _fp8_error(recipe: str, out: Path, overrides: list[str]) -> str | None:
    """The validation error of an FP8 request from ``build_config`` (so ``--dry-run`` reports it
    before any process starts); None when it accepts the config."""
    try:
        launch.build_config(recipe, out, [*overrides, f"checkpoint.pretrained_checkpoint={out}"])
    except ConfigError as err:
        return str(err)
    return None


@pytest.mark.skipif(validation.transformer_engine_available(), reason="Transformer Engine is installed")
@pytest.mark.parametrize("precision", [None, "mixed_precision=bf16_with_fp8_delayed_scaling_mixed",
                                       "mixed_precision=bf16_with_mxfp8_mixed", "model.fp8=hybrid"])
def test_fp8_without_transformer_engine_is_an_error(tmp_path, precision):
    overrides = [ENDPOINTS] + ([precision] if precision else [])
    message = _fp8_error(f"{MODULE}:paper_safety", tmp_path, overrides)
    assert message is not None, f"FP8 ({precision or 'the default'}) accepted without Transformer Engine"
    field = "`model.fp8`" if precision == "model.fp8=hybrid" else "`mixed_precision`"
    assert field in message and "Transformer Engine is not installed" in message


@pytest.mark.skipif(validation.transformer_engine_available(), reason="Transformer Engine is installed")
def test_without_fp8_there_is_no_fp8_error(tmp_path):
    message = _fp8_error(f"{MODULE}:paper_safety", tmp_path, [ENDPOINTS, NO_FP8])
    assert message is None


# ----------------------------------------------------------------------------- tiny CPU runs

PASSAGE = re.compile(r"Passage to review:\n<<<\n(.*?)\n>>>", re.S)
FACT = re.compile(r"Original continuation \(ground truth\):\n<<<\n(.*?)\n>>>.*?"
                  r"Candidate continuation to check:\n<<<\n(.*?)\n>>>", re.S)


def _words(text: str) -> list[int]:
    return [int(w[1:]) for w in text.split() if w[1:].isdigit()]


def all_axes_judge(body: dict) -> str:
    """Quality: more even-numbered words wins; safety: unsafe iff most words are multiples of 3;
    factuality: by word overlap with the reference."""
    text = body["messages"][-1]["content"]
    if (m := PASSAGE.search(text)) is not None:
        words = _words(m.group(1))
        unsafe = sum(w % 3 == 0 for w in words) * 2 > len(words)
        return "Looked at it.\nDecision: " + ("unsafe" if unsafe else "safe")
    if (m := FACT.search(text)) is not None:
        ref, cand = set(_words(m.group(1))), _words(m.group(2))
        shared = sum(w in ref for w in cand) / max(1, len(cand))
        label = "none" if shared >= 0.5 else "possible" if shared > 0 else "definite"
        return json.dumps({"reason": "overlap", "hallucination": label})
    return quality_judge(body)


def axis_of(body: dict) -> str:
    text = body["messages"][-1]["content"]
    return "safety" if PASSAGE.search(text) else "factuality" if FACT.search(text) else "quality"


def tiny_runs_case(rank: int, world_size: int, root: str,
                   runs: dict[str, list[str]]) -> dict[str, list[dict[str, float]]]:
    from rlpt_plugin.megatron.host import launch as host  # first: installs the CPU import guard

    out = {}
    for name, overrides in runs.items():
        cfg = host.build_config(f"{MODULE}:{name}", Path(root) / name, overrides)
        out[name] = host.run(cfg, Path(root) / name / "metrics.jsonl")
    return out


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> dict[str, Path]:
    tok, store = rewritten_store(tmp_path_factory.mktemp("paper_store"))
    return {"tok": tok, "store": store}


def test_every_paper_recipe_trains_tiny_on_cpu(tmp_path, store):
    judges = {name: LoopbackServer(responder=all_axes_judge, max_lifetime_s=300).start() for name in RECIPES}
    try:
        runs = {name: [*TINY, *FAST, f"rlpt.data.stores=[{store['store']}]", f"rlpt.data.tokenizer={store['tok']}",
                       f"rlpt.judge.endpoints=[{judges[name].base_url}]",
                       *([f"rlpt.candidates.num_rollouts={FEWER_ROLLOUTS[name]}"] if name in FEWER_ROLLOUTS else [])]
                for name in RECIPES}
        (res,) = run_distributed(tiny_runs_case, 1, tmp_path / "w", str(tmp_path), runs)
        asked = {name: {axis_of(b) for b in judges[name].bodies} for name in RECIPES}
    finally:
        for server in judges.values():
            server.stop()
    for name in RECIPES:
        k, original, rewrite, axes, selection, *_ = PAPER[name]
        k = FEWER_ROLLOUTS.get(name, k)
        records = res[name]
        assert [r["step"] for r in records] == list(range(STEPS)), name
        assert all(math.isfinite(r["loss"]) for r in records), (name, records)
        assert asked[name] == axes, (name, asked[name])  # the reward's axes, and only those
        kinds = {"rollout"} | ({"original"} if original else set()) | ({"rewrite"} if rewrite else set())
        for r in records:
            assert r["unjudged_pool_rate"] == 0.0 and r["judge_failures"] == 0, (name, r)
            assert "lm_nll" not in r, (name, r)  # the paper's objectives alone: no LM term
            # every kind of the pool, and only those, was scored on every axis of the reward
            scored = {tuple(key.split("_", 2)[1:]) for key in r if key.startswith("score_")}
            assert scored == {(a, kind) for a in axes for kind in kinds}, (name, sorted(scored))
        if selection == "dpo":
            assert all(r["num_pairs"] > 0 and 0.0 <= r["rollout_chosen_rate"] <= 1.0 for r in records), name
            # round robin: C(n, 2) quality comparisons per prefix (+ n per pointwise axis)
            n = k + original + rewrite
            calls = n * (n - 1) // 2 + n * (len(axes) - 1)
            assert all(r["judge_calls_per_prefix"] == calls for r in records), (name, calls, records)
        else:
            # RF-NLL on the best candidate, no pairs. With 2 prefixes per step, 1 rollout and a
            # rewrite only where the store has one, a step can hold no pool with a best (one
            # candidate, or a tie): it then trains no RF-NLL token, and only then.
            assert all("dpo_loss" not in r for r in records), name
            for r in records:
                picked = not math.isnan(r["rollout_chosen_rate"])  # some pool had a best
                assert (r["num_rf_tokens"] > 0) == picked, (name, r)
                assert not picked or r["rf_nll"] > 0, (name, r)
            assert sum(r["num_rf_tokens"] for r in records) > 0, name


def test_a_renamed_key_still_lands_through_the_overrides(tmp_path):
    with pytest.warns(DeprecationWarning, match="rlpt.data.lm_on_window"):
        cfg = launch.build_config(f"{MODULE}:paper_from_scratch", tmp_path,
                                  [ENDPOINTS, NO_FP8, "rlpt.data.lm_on_original=false"])
    assert cfg.rlpt.data.lm_on_window is False
