"""A recipe Bridge ships, wrapped unchanged by the real ``rlpt train`` command line.

``megatron.bridge.recipes.llama.llama3:llama32_1b_pretrain_config`` builds its model from the
Hugging Face config of meta-llama/Llama-3.2-1B through ``AutoBridge``. No hub is reachable here,
so the test writes that public config (below) into a local Hugging Face cache and runs offline,
as a cluster with a mirrored cache would. Everything else is the recipe's own config, shrunk to a
tiny CPU model by command-line overrides only.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rlpt_plugin.megatron.host import compat

pytestmark = pytest.mark.bridge
RECIPE = "megatron.bridge.recipes.llama.llama3:llama32_1b_pretrain_config"
HF_ID = "meta-llama/Llama-3.2-1B"
# meta-llama/Llama-3.2-1B config.json (public model card values)
LLAMA32_1B = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "attention_bias": False,
    "attention_dropout": 0.0, "bos_token_id": 128000, "eos_token_id": 128001, "head_dim": 64,
    "hidden_act": "silu", "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 8192,
    "max_position_embeddings": 131072, "mlp_bias": False, "num_attention_heads": 32,
    "num_hidden_layers": 16, "num_key_value_heads": 8, "pretraining_tp": 1, "rms_norm_eps": 1e-05,
    "rope_scaling": {"factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "rope_theta": 500000.0, "tie_word_embeddings": True, "torch_dtype": "bfloat16", "use_cache": True,
    "vocab_size": 128256,
}
STEPS = 3
# A tiny model on the CPU rules of docs/CPU_BACKEND.md: local implementation, fusions off, fp32, gloo.
TINY_CPU = [
    "model.num_layers=2", "model.hidden_size=64", "model.ffn_hidden_size=128", "model.num_attention_heads=4",
    "model.num_query_groups=2", "model.kv_channels=16", "model.seq_length=24", "model.vocab_size=128",
    "model.make_vocab_size_divisible_by=32", "model.transformer_impl=local",
    "model.cross_entropy_loss_fusion=false", "model.bias_activation_fusion=false",
    "model.bias_dropout_fusion=false", "model.masked_softmax_fusion=false", "model.persist_layer_norm=false",
    "model.apply_rope_fusion=false", "model.gradient_accumulation_fusion=false", "model.batch_p2p_comm=false",
    "tokenizer.vocab_size=127", "mixed_precision=null", "dist.distributed_backend=gloo",
    "ddp.use_distributed_optimizer=false", "ddp.overlap_grad_reduce=false", "ddp.overlap_param_gather=false",
    "optimizer.use_distributed_optimizer=false", f"train.train_iters={STEPS}", "train.global_batch_size=24",
    "train.micro_batch_size=6", "train.manual_gc=false", "scheduler.lr_warmup_iters=0",
    f"checkpoint.save_interval={STEPS}", "logger.log_interval=1", "dataset.num_workers=0",
    "rlpt.data.source=synthetic",  # ready-made candidate groups: no rewritten store in this test
]
# Bridge 0.6 moved eval settings into a `validation` section
EVAL_OFF = {"0.16": "train.eval_iters=0", "0.19": "validation.eval_iters=0"}


def hf_cache(root: Path) -> Path:
    """A Hugging Face cache holding only the config of ``HF_ID``."""
    repo = root / "hub" / f"models--{HF_ID.replace('/', '--')}"
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text(json.dumps(LLAMA32_1B))
    return root


def test_a_bridge_llama3_recipe_trains_through_rlpt_train(tmp_path):
    pytest.importorskip("megatron.energon", reason="Bridge's recipes package imports megatron.energon")
    env = {**os.environ, "HF_HOME": str(hf_cache(tmp_path / "hf")), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    out = tmp_path / "run"
    command = [sys.executable, "-m", "rlpt_plugin.cli", "train", "--recipe", RECIPE, "--out", str(out),
               *TINY_CPU, EVAL_OFF[compat.installed_stack()]]
    dry = subprocess.run([*command, "--dry-run"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=600)
    assert dry.returncode == 0, dry.stderr[-3000:]
    resolved = dry.stdout
    # The recipe's own model (from the HF config) and settings, wrapped: its dataset is job_data.
    for line in (f"hf_model_id: {HF_ID}", "normalization: RMSNorm", "gated_linear_unit: true",
                 "num_layers: 2", "rotary_base: 500000", "job_data:", "lr: 0.0003", "min_lr: 3.0e-05"):
        assert line in resolved, line
    run = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, (run.stdout[-2000:], run.stderr[-3000:])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(STEPS))
    assert all(math.isfinite(r["loss"]) and r["num_pairs"] > 0 for r in records)
    assert (out / "ckpt" / f"iter_{STEPS:07d}").is_dir()  # the recipe's checkpoints, moved under --out
    assert not (tmp_path / "nemo_experiments").exists()  # nothing under the recipe's default ./
