"""The paper's runs (arXiv 2601.21343, docs/METHOD.md) as Megatron-Bridge recipes.

One recipe per setting, all on the same policy and schedule unless stated:

============================  =====================  ================================  =========  ======
recipe                        reward (judge axes)    pool per prefix                   update     steps
============================  =====================  ================================  =========  ======
``paper_quality``             quality                16 rollouts                       DPO        2,000
``paper_factuality``          quality + factuality   16 rollouts                       DPO        2,000
``paper_safety``              quality + safety       16 rollouts + original suffix     DPO        2,000
``paper_from_scratch``        quality + safety       1 rollout + teacher rewrite       RF-NLL     21,000
============================  =====================  ================================  =========  ======

Data: SlimPajama for quality and factuality, a RedPajama-V2 subset filtered to be unsafe for
safety, as in the paper. The paper reports its from-scratch run on safety and quality, so that
recipe uses the safety reward and the safety data placeholder; point ``rlpt.data.stores`` at a
corpus large enough for 21,000 x 256 windows.

**Policy.** A 1.4B model with the Llama-2 architecture (``compat.llama_model_provider``):
24 layers, hidden 2048, 16 attention heads (multi-head, no GQA: ``num_query_groups`` left
unset so it follows the head count), SwiGLU FFN 5504, RMSNorm (eps 1e-5), rotary positions
(base 10,000), no biases, untied input/output embeddings, vocabulary 32,000 (the Llama-2
tokenizer), sequence 2048: 1.35B parameters (1.22B in the layers, 0.13B in the embeddings).

**Schedule.** Global batch 256 prefixes (``rlpt.data.groups_per_step``), sequence 2048.
Continual pretraining (quality, factuality, safety): 2,000 steps, cosine LR peak 5e-6, 100
warmup steps, min LR 0.1 x peak, starting from the pretrained checkpoint
``checkpoint.pretrained_checkpoint`` (weights only; a checkpoint in ``checkpoint.load`` wins,
so a restarted job resumes). From scratch: 21,000 steps, LR 5e-4, 2,000 warmup, same cosine
shape (the paper gives no min ratio for it; 0.1 is kept). Adam (0.9, 0.95, eps 1e-8), weight
decay 0.1, gradient clipping 1.0: the paper leaves the optimizer open, these are Bridge's Llama
defaults. ``N`` (suffix tokens, paper 128) is a property of the rewritten store (``rlpt
rewrite --suffix-length 128 --seq-length 2048``), not of the recipe. Rollouts: temperature 1.0,
top-p 1.0, as in the paper.

**Loss.** The paper's objectives alone: online DPO (chosen = best, rejected = worst, beta 0.1,
reference = the policy that sampled the rollouts) for the continual settings, reward-filtered
NLL on the best candidate for from-scratch. No next-token term on the original text (which in
the safety setting would keep training on the unsafe originals): ``rlpt.loss.lm.start=1
rlpt.data.lm_on_window=true`` adds it back.

**Rows per step.** ``train.global_batch_size`` counts packed rows, not prefixes: 2 rows per
prefix under DPO (chosen + rejected; the original is only a candidate), 1 under RF-NLL, so 512
and 256 rows. Micro-batches of 4 rows hold whole prefixes (2 under DPO, 4 under RF-NLL).
Changing ``rlpt.data.groups_per_step`` needs ``train.global_batch_size`` = rows per prefix x
prefixes (a multiple of ``train.micro_batch_size`` x data-parallel size).

**Teacher.** The judge is a prompted GPT-OSS-120B (the paper's best) behind OpenAI-protocol
servers, judged per axis with all-pairs (round robin) quality comparisons as in the paper; a
Llama judge is ``rlpt.judge.model=meta-llama/Llama-3.1-8B-Instruct rlpt.judge.samples=5`` (or
the ``teacher=llama31_8b`` config group). The rewriter ran offline (``rlpt rewrite``) and its
output is in the store.

**Placeholders** to override on the command line: ``rlpt.judge.endpoints`` (see
examples/slurm/judge_pool.sbatch, which writes the list), ``rlpt.data.stores``,
``rlpt.data.tokenizer``, ``checkpoint.pretrained_checkpoint`` (a Megatron checkpoint of the
start model, e.g. converted from Hugging Face with Bridge's ``AutoBridge``). Bridge ignores a
``pretrained_checkpoint`` that does not exist (it then trains from random weights): check it.

**Parallelism** (8 nodes x 8 H100 = 64 GPUs): TP 1, PP 1, CP 1, DP 64 (data parallelism is
what is left of the world size), distributed optimizer. A 1.4B model fits on one 80 GB GPU
without model parallelism: bf16 weights 2.7 GB, fp32 gradient buffer 5.4 GB, fp32 main weights
+ Adam states 16 GB sharded 64 ways (0.25 GB), activations of a 4 x 2048-token micro-batch with
flash attention about 14 GB, and the rollout KV cache of the rank's 4 prefixes x 16 rollouts
(0.4 GB per 2048-position sequence in bf16, 25 GB if all 64 hold a full copy): under 50 GB
even when all of it is live at once. Tensor parallelism would only add two all-reduces per
layer. Each DP rank takes 4 prefixes per step (64 rollouts of N tokens), the judge traffic of
its 4 pools, and 2 micro-batches. If memory runs short (longer sequences, larger K), use
``model.tensor_model_parallel_size=2 model.sequence_parallel=true`` (TP inside a node's NVLink
domain; DP becomes 32, 8 prefixes per rank) before anything else.

**Precision (GPU).** Transformer Engine layers and Bridge's FP8 mixed precision, per-tensor
current scaling (``bf16_with_fp8_current_scaling_mixed``: first and last layer in bf16, FP8
weights gathered) by default; select another by name with ``mixed_precision=...``:
``bf16_with_fp8_delayed_scaling_mixed``, ``bf16_with_mxfp8_mixed`` (Blackwell only),
``bf16_mixed`` (no FP8), or ``null`` (fp32). Transformer Engine is never imported here: the TE
layer spec (a function Bridge calls when it builds the model) is chosen when the package is
installed, Bridge's local spec otherwise, and the FP8 request is kept either way, so on a
machine without TE the run stops with the plugin's validation error naming ``model.fp8``
(reported when Bridge applies the mixed-precision recipe at the start of ``pretrain()``, or at
build time for ``model.fp8=...``) instead of silently training in bf16.

**Hardware-dependent choices** that Hydra cannot express (the layer spec) or that only make
sense on one kind of machine are made here from ``torch.cuda.is_available()`` and the presence
of TE, like the backend in rlpt_plugin/recipes/tiny.py. GPU with TE: NCCL, the fused kernels
(bias/activation, bias/dropout, masked softmax, persistent norm, rope, cross-entropy; weight-
gradient accumulation only when apex's CUDA extension is there, which megatron-core's output
layer needs), overlapped gradient reduction and parameter gather, batched p2p. CPU: gloo, every
fusion off, ``batch_p2p_comm=False``, no overlap (docs/CPU_BACKEND.md). Any of them can still be
overridden. This module never imports Transformer Engine itself (megatron-core probes for it
when Bridge loads).

**Tiny CPU run.** The same overrides shrink every recipe to a few CPU steps (tests/recipes adds
the store, tokenizer and judge endpoint of the test, and ``checkpoint.save=null`` for speed)::

    model.num_layers=2 model.hidden_size=64 model.ffn_hidden_size=128 model.num_attention_heads=4
    model.seq_length=32 mixed_precision=null rlpt.data.groups_per_step=2
    train.global_batch_size=4 train.train_iters=3 checkpoint.pretrained_checkpoint=null

``model.seq_length`` must match the store's ``--seq-length``; the vocabulary stays 32,000
(any tokenizer up to that size fits); ``mixed_precision=null`` is the explicit "no FP8" a
machine without TE needs; ``checkpoint.pretrained_checkpoint=null`` starts from random weights
(validation rejects a start checkpoint that does not exist).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch

from rlpt_plugin.config import RLPTConfig
from rlpt_plugin.config_judge import JUDGE_AXES
from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer, RLPTDataProvider
from rlpt_plugin.megatron.host.compat import llama_model_provider
from rlpt_plugin.megatron.host.validation import transformer_engine_available

from megatron.bridge.models.gpt_provider import local_layer_spec, transformer_engine_layer_spec
from megatron.bridge.training.config import (
    CheckpointConfig,
    DistributedDataParallelConfig,
    DistributedInitConfig,
    LoggerConfig,
    OptimizerConfig,
    RNGConfig,
    SchedulerConfig,
    TrainingConfig,
)
from megatron.bridge.training.tokenizers.config import TokenizerConfig

# Placeholders: every one is meant to be overridden on the command line.
JUDGE_ENDPOINTS = ["http://judge-0:8000/v1", "http://judge-1:8000/v1", "http://judge-2:8000/v1",
                   "http://judge-3:8000/v1"]
JUDGE_MODEL = "openai/gpt-oss-120b"
TOKENIZER = "/path/to/llama-2-tokenizer"
SLIMPAJAMA_STORE = "/path/to/stores/slimpajama"
UNSAFE_STORE = "/path/to/stores/redpajama_v2_unsafe"
START_CHECKPOINT = "/path/to/checkpoints/llama2-1.4b"

FP8_MIXED_PRECISION = "bf16_with_fp8_current_scaling_mixed"
VOCAB_SIZE = 32000
SEQ_LENGTH = 2048
PREFIXES_PER_STEP = 256
MICRO_BATCH_ROWS = 4


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None  # locates, never imports


def llama2_1p4b(*, cuda: bool, te: bool) -> Any:
    """The policy: Llama-2 architecture at 1.4B, laid out for 64 GPUs (TP1 PP1, DP = the rest)."""
    fused = cuda and te  # fused kernels: TE's and megatron-core's jit-fused ones
    # The output layer is megatron-core's own ColumnParallelLinear: its fused weight-gradient
    # accumulation needs apex's CUDA extension (NGC containers have it), not TE.
    grad_accum_fusion = fused and _has_module("fused_weight_gradient_mlp_cuda")
    return llama_model_provider(
        num_layers=24, hidden_size=2048, ffn_hidden_size=5504, num_attention_heads=16,
        vocab_size=VOCAB_SIZE, seq_length=SEQ_LENGTH, layernorm_epsilon=1e-5, rotary_base=10000,
        init_method_std=0.02,
        tensor_model_parallel_size=1, pipeline_model_parallel_size=1, context_parallel_size=1,
        sequence_parallel=False, pipeline_dtype=torch.float32,  # mixed precision sets bf16
        transformer_layer_spec=transformer_engine_layer_spec if te else local_layer_spec,
        transformer_impl="transformer_engine" if te else "local",
        bias_activation_fusion=fused, bias_dropout_fusion=fused, masked_softmax_fusion=fused,
        persist_layer_norm=fused, apply_rope_fusion=fused, gradient_accumulation_fusion=grad_accum_fusion,
        cross_entropy_loss_fusion=fused, batch_p2p_comm=cuda, use_cpu_initialization=not cuda)


def paper_config(out_dir: str | Path, *, train_iters: int, lr: float, warmup: int, store: str,
                 axes: dict[str, float], rollouts: int, original: bool, rewrite: bool, selection: str,
                 start_checkpoint: str | None, save_interval: int) -> RLPTConfigContainer:
    """The shared body of the paper's recipes (see the module docstring for every number)."""
    out_dir = Path(out_dir)
    cuda, te = torch.cuda.is_available(), transformer_engine_available()
    rows_per_prefix = 2 if selection == "dpo" else 1
    rlpt = RLPTConfig()
    rlpt.data.source, rlpt.data.stores, rlpt.data.tokenizer = "store", [store], TOKENIZER
    rlpt.data.groups_per_step, rlpt.data.lm_on_window = PREFIXES_PER_STEP, False
    c = rlpt.candidates
    c.num_rollouts, c.rollouts, c.original, c.rewrite = rollouts, True, original, rewrite
    c.temperature, c.top_p = 1.0, 1.0
    j = rlpt.judge
    j.backend, j.endpoints, j.model = "openai", list(JUDGE_ENDPOINTS), JUDGE_MODEL
    for axis in JUDGE_AXES:
        setattr(j, axis, axes.get(axis, 0.0))
    j.schedule, j.samples = "round_robin", 1
    loss = rlpt.loss
    loss.selection = selection
    loss.lm.start = 0.0
    loss.dpo.start = 1.0 if selection == "dpo" else 0.0
    loss.rf_nll.start = 0.0 if selection == "dpo" else 1.0
    return RLPTConfigContainer(
        model=llama2_1p4b(cuda=cuda, te=te),
        train=TrainingConfig(train_iters=train_iters, micro_batch_size=MICRO_BATCH_ROWS,
                             global_batch_size=rows_per_prefix * PREFIXES_PER_STEP, eval_iters=0,
                             eval_interval=train_iters, manual_gc=cuda, manual_gc_interval=100),
        optimizer=OptimizerConfig(optimizer="adam", lr=lr, min_lr=0.1 * lr, weight_decay=0.1,
                                  adam_beta1=0.9, adam_beta2=0.95, adam_eps=1e-8, clip_grad=1.0,
                                  bf16=False, fp16=False, use_distributed_optimizer=True),
        scheduler=SchedulerConfig(lr_decay_style="cosine", lr_warmup_iters=warmup, lr_warmup_init=0.0,
                                  start_weight_decay=0.1, end_weight_decay=0.1,
                                  weight_decay_incr_style="constant", override_opt_param_scheduler=True),
        ddp=DistributedDataParallelConfig(check_for_nan_in_grad=True, grad_reduce_in_fp32=True,
                                          overlap_grad_reduce=cuda, overlap_param_gather=cuda,
                                          use_distributed_optimizer=True),
        dataset=RLPTDataProvider(),
        logger=LoggerConfig(log_interval=10, tensorboard_dir=str(out_dir / "tb")),
        tokenizer=TokenizerConfig(tokenizer_type="NullTokenizer", vocab_size=VOCAB_SIZE),
        checkpoint=CheckpointConfig(save=str(out_dir / "ckpt"), load=str(out_dir / "ckpt"),
                                    pretrained_checkpoint=start_checkpoint, save_interval=save_interval,
                                    ckpt_format="torch_dist", async_save=False, fully_parallel_save=True),
        dist=DistributedInitConfig(distributed_backend="nccl" if cuda else "gloo"),
        rng=RNGConfig(seed=1234),
        mixed_precision=FP8_MIXED_PRECISION,
        rlpt=rlpt,
    )


def _continual(out_dir: str | Path, **kw) -> RLPTConfigContainer:
    return paper_config(out_dir, train_iters=2000, lr=5e-6, warmup=100, rollouts=16, rewrite=False,
                        selection="dpo", start_checkpoint=START_CHECKPOINT, save_interval=200, **kw)


def paper_quality(out_dir: str | Path) -> RLPTConfigContainer:
    """Continual pretraining on SlimPajama, reward = pairwise quality win rate, 16 rollouts."""
    return _continual(out_dir, store=SLIMPAJAMA_STORE, axes={"quality": 1.0}, original=False)


def paper_factuality(out_dir: str | Path) -> RLPTConfigContainer:
    """Continual pretraining on SlimPajama, reward = quality + factuality, 16 rollouts."""
    return _continual(out_dir, store=SLIMPAJAMA_STORE, axes={"quality": 1.0, "factuality": 1.0},
                      original=False)


def paper_safety(out_dir: str | Path) -> RLPTConfigContainer:
    """Continual pretraining on unsafe-filtered RedPajama-V2, reward = quality + safety,
    16 rollouts + the original suffix (the paper's best safety pool)."""
    return _continual(out_dir, store=UNSAFE_STORE, axes={"quality": 1.0, "safety": 1.0}, original=True)


def paper_from_scratch(out_dir: str | Path) -> RLPTConfigContainer:
    """Pretraining from random weights, reward = quality + safety, 1 rollout + the teacher's
    rewrite, RF-NLL on the better one."""
    return paper_config(out_dir, train_iters=21000, lr=5e-4, warmup=2000, store=UNSAFE_STORE,
                        axes={"quality": 1.0, "safety": 1.0}, rollouts=1, original=False, rewrite=True,
                        selection="rf_nll", start_checkpoint=None, save_interval=1000)
