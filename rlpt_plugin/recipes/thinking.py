"""Thinking mid-training at the report's scale (arXiv 2601.21343 v3, Section 2) as Bridge recipes.

Two phases on Llama-3-8B-Base, each on its own half of a mid-training corpus (the report's is
DCLM + FineMath), split by ``rlpt rewrite --task think --shard 0/2`` and ``--shard 1/2``:

===========================  ============================================================  ======
recipe                       what it trains                                                 steps
===========================  ============================================================  ======
``thinking_sft``             next-token on thought-augmented chunks of half 0 (loss on      2,000
                             original and thought tokens), beside the raw windows' LM rows
``thinking_rlmt``            Dr. GRPO on thinking rollouts of half 1's prefixes (K = 8,     1,000
                             thought budget 1,024, answer N = the store's suffix length),
                             reward 1 when the judge finds the answer has the true
                             suffix's content; no next-token term
===========================  ============================================================  ======

The report gives the model, the data, the phases, the binary similarity reward and Dr. GRPO; it
leaves chunk length, thought budget, K, steps, batch and learning rates open. The numbers here
are this plugin's choices, each a field to override: chunks of 2,048 tokens in sequences of
4,096 (a chunk with its thoughts fits a row), 256 chunks per SFT step, 64 prefixes x 8 rollouts
per RLMT step (a group-relative baseline needs several samples; 8 is the common GRPO choice), a
1,024-token thought budget and a 128-token answer (``rlpt rewrite --suffix-length 128`` of the RL
half), constant LR 2e-5 for SFT after 100 warm-up steps and 1e-6 for RLMT (RL updates on a
pretrained 8B are small; PPO-style clipping at 0.2 bounds each step). RLMT starts from the SFT
checkpoint (``checkpoint.pretrained_checkpoint``).

**Policy.** Llama-3-8B: 32 layers, hidden 4,096, 32 heads with 8 key-value groups (GQA), SwiGLU
14,336, RMSNorm 1e-5, RoPE base 500,000, vocabulary 128,256, untied embeddings: 8.0B parameters.
**Parallelism** (8 nodes x 8 H100): TP 2 with sequence parallelism inside a node, PP 1, DP 32,
distributed optimizer: bf16 weights 8 GB per GPU, fp32 main weights and Adam states sharded 32
ways (3 GB), activations of a 2-row x 4,096 micro-batch under 30 GB; the rollout KV cache of a
rank's 2 prefixes x 8 rollouts of up to 4,096 positions is 8.6 GB (bf16, GQA). FP8 mixed
precision as in ``rlpt_plugin.recipes.paper``; ``mixed_precision=null`` on a machine without
Transformer Engine.

**Placeholders** to override: ``rlpt.data.stores`` (raw windows for SFT, the RL half's windows
for RLMT), ``rlpt.data.think_stores``, ``rlpt.data.tokenizer``, ``rlpt.judge.endpoints`` /
``rlpt.judge.model`` (a post-trained judge behind OpenAI-protocol servers),
``checkpoint.pretrained_checkpoint``. ``rlpt train --recipe ...:thinking_rlmt --dry-run --gpus
64`` prints the step's plan (thought and rollout tokens, judge calls and prompt tokens) and an
H100 estimate before anything is launched.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer
from rlpt_plugin.megatron.host.compat import llama_model_provider
from rlpt_plugin.megatron.host.validation import transformer_engine_available
from rlpt_plugin.recipes.paper import FP8_MIXED_PRECISION, JUDGE_ENDPOINTS, JUDGE_MODEL, paper_config

from megatron.bridge.models.gpt_provider import local_layer_spec, transformer_engine_layer_spec

TOKENIZER = "/path/to/llama-3-tokenizer"
RAW_STORE = "/path/to/stores/midtraining_half0_windows"
THINK_STORE = "/path/to/stores/midtraining_half0_think"
RL_STORE = "/path/to/stores/midtraining_half1_windows"
BASE_CHECKPOINT = "/path/to/checkpoints/llama3-8b-base"
SFT_CHECKPOINT = "/path/to/runs/thinking_sft/ckpt"
VOCAB_SIZE = 128256
SEQ_LENGTH = 4096
SFT_PREFIXES, SFT_THINK_CHUNKS = 256, 256
RLMT_PREFIXES, RLMT_ROLLOUTS, THOUGHT_BUDGET = 64, 8, 1024
MICRO_BATCH_ROWS = 2


def llama3_8b(*, cuda: bool, te: bool):
    """Llama-3-8B, TP 2 with sequence parallelism (DP = what is left of the world size)."""
    fused = cuda and te
    return llama_model_provider(
        num_layers=32, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32, num_query_groups=8,
        vocab_size=VOCAB_SIZE, seq_length=SEQ_LENGTH, layernorm_epsilon=1e-5, rotary_base=500000,
        init_method_std=0.02, tensor_model_parallel_size=2, pipeline_model_parallel_size=1,
        context_parallel_size=1, sequence_parallel=True, pipeline_dtype=torch.float32,
        transformer_layer_spec=transformer_engine_layer_spec if te else local_layer_spec,
        transformer_impl="transformer_engine" if te else "local",
        bias_activation_fusion=fused, bias_dropout_fusion=fused, masked_softmax_fusion=fused,
        persist_layer_norm=fused, apply_rope_fusion=fused, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=fused, batch_p2p_comm=cuda, use_cpu_initialization=not cuda)


def _thinking(out_dir: str | Path, **kw) -> RLPTConfigContainer:
    """The paper recipes' body (optimizer, checkpoints, FP8) with the 8B model and tokenizer."""
    cfg = paper_config(out_dir, **kw)
    cfg.model = llama3_8b(cuda=torch.cuda.is_available(), te=transformer_engine_available())
    cfg.tokenizer.vocab_size = VOCAB_SIZE
    cfg.rlpt.data.tokenizer = TOKENIZER
    cfg.mixed_precision = FP8_MIXED_PRECISION
    cfg.train.micro_batch_size = MICRO_BATCH_ROWS
    cfg.scheduler.lr_decay_style = "constant"
    cfg.optimizer.min_lr = cfg.optimizer.lr
    return cfg


def thinking_sft(out_dir: str | Path) -> RLPTConfigContainer:
    """Thinking SFT: next-token on half 0's raw windows plus its thought-augmented chunks."""
    cfg = _thinking(out_dir, train_iters=2000, lr=2e-5, warmup=100, store=RAW_STORE, axes={"quality": 1.0},
                    rollouts=0, original=True, rewrite=False, selection="rf_nll",
                    start_checkpoint=BASE_CHECKPOINT, save_interval=200)
    r = cfg.rlpt
    r.data.groups_per_step, r.data.lm_on_window = SFT_PREFIXES, True
    r.data.think_stores, r.data.think_sequences_per_step = [THINK_STORE], SFT_THINK_CHUNKS
    r.loss.lm.start, r.loss.rf_nll.start, r.loss.dpo.start = 1.0, 0.0, 0.0  # next-token terms only
    cfg.train.global_batch_size = SFT_PREFIXES + SFT_THINK_CHUNKS
    return cfg


def thinking_rlmt(out_dir: str | Path) -> RLPTConfigContainer:
    """RLMT: Dr. GRPO on K thinking rollouts of half 1's prefixes, similarity reward, from SFT."""
    cfg = _thinking(out_dir, train_iters=1000, lr=1e-6, warmup=20, store=RL_STORE, axes={"similarity": 1.0},
                    rollouts=RLMT_ROLLOUTS, original=False, rewrite=False, selection="grpo",
                    start_checkpoint=SFT_CHECKPOINT, save_interval=100)
    r = cfg.rlpt
    r.data.groups_per_step = RLMT_PREFIXES
    r.candidates.thinking_budget = THOUGHT_BUDGET
    r.judge.endpoints, r.judge.model = list(JUDGE_ENDPOINTS), JUDGE_MODEL
    r.judge.structured_output = "auto"
    r.loss.reference = "rollout"
    r.loss.lm.start, r.loss.dpo.start, r.loss.rf_nll.start, r.loss.grpo.start = 0.0, 0.0, 0.0, 1.0
    cfg.train.global_batch_size = RLMT_PREFIXES * RLMT_ROLLOUTS  # one row per rollout
    return cfg
