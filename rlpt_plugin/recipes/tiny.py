"""A tiny GPT that trains with the rlpt loss through Bridge's ``pretrain()`` in seconds on CPU.

The CPU rules of docs/CPU_BACKEND.md apply: Bridge's local (non-TE) layer spec, fp32, every fusion
off, ``batch_p2p_comm=False`` (mandatory for gloo under pipeline parallelism), gloo, and an
explicit weight-decay schedule. On a GPU machine the same recipe runs with NCCL.
"""

from __future__ import annotations

from pathlib import Path

import torch

from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer, RLPTDataProvider

from megatron.bridge.models import GPTModelProvider
from megatron.bridge.models.gpt_provider import local_layer_spec
from megatron.bridge.training.config import (
    CheckpointConfig,
    DistributedInitConfig,
    LoggerConfig,
    OptimizerConfig,
    RNGConfig,
    SchedulerConfig,
    TrainingConfig,
)
from megatron.bridge.training.tokenizers.config import TokenizerConfig

VOCAB = 128


def tiny_config(out_dir: str | Path, *, train_iters: int = 20, tp: int = 1, pp: int = 1,
                micro_batch_size: int = 6, global_batch_size: int = 24, seq_length: int = 24,
                lr: float = 3e-3, save_interval: int | None = None) -> RLPTConfigContainer:
    """2-layer GPT (h64, vocab 128), 8 synthetic candidate groups per step, Adam."""
    cfg = cpu_gpt_config(out_dir, num_layers=2, hidden_size=64, num_attention_heads=4, vocab_size=VOCAB,
                          tokenizer_vocab_size=VOCAB - 1, train_iters=train_iters, tp=tp, pp=pp,
                          micro_batch_size=micro_batch_size, global_batch_size=global_batch_size,
                          seq_length=seq_length, lr=lr, save_interval=save_interval)
    cfg.rlpt.data.source = "synthetic"  # ready-made counting groups: no store, no teacher
    return cfg


def cpu_gpt_config(out_dir: str | Path, *, num_layers: int, hidden_size: int, num_attention_heads: int,
                   vocab_size: int, tokenizer_vocab_size: int, train_iters: int, tp: int = 1, pp: int = 1,
                   micro_batch_size: int, global_batch_size: int, seq_length: int, lr: float,
                   min_lr: float | None = None, lr_decay_style: str = "constant", lr_warmup_iters: int = 0,
                   save_interval: int | None = None, seed: int = 1234) -> RLPTConfigContainer:
    """A small GPT under the CPU rules (also runs as-is with NCCL on a GPU machine)."""
    out_dir = Path(out_dir)
    cuda = torch.cuda.is_available()
    model = GPTModelProvider(
        num_layers=num_layers, hidden_size=hidden_size, ffn_hidden_size=2 * hidden_size,
        num_attention_heads=num_attention_heads, seq_length=seq_length, vocab_size=vocab_size,
        make_vocab_size_divisible_by=32,  # same padded size at TP1/2/4
        share_embeddings_and_output_weights=False, position_embedding_type="rope",
        normalization="RMSNorm", hidden_dropout=0.0, attention_dropout=0.0,
        tensor_model_parallel_size=tp, pipeline_model_parallel_size=pp,
        transformer_layer_spec=local_layer_spec, bias_activation_fusion=False,
        bias_dropout_fusion=False, masked_softmax_fusion=False, persist_layer_norm=False,
        apply_rope_fusion=False, gradient_accumulation_fusion=False,
        cross_entropy_loss_fusion=False, batch_p2p_comm=False, pipeline_dtype=torch.float32,
        use_cpu_initialization=True)
    return RLPTConfigContainer(
        model=model,
        train=TrainingConfig(train_iters=train_iters, micro_batch_size=micro_batch_size,
                             global_batch_size=global_batch_size, eval_iters=0,
                             eval_interval=train_iters),
        optimizer=OptimizerConfig(optimizer="adam", lr=lr, min_lr=lr / 10 if min_lr is None else min_lr,
                                  weight_decay=0.0, clip_grad=1.0, bf16=False, fp16=False,
                                  use_distributed_optimizer=False),
        scheduler=SchedulerConfig(lr_decay_style=lr_decay_style, lr_warmup_iters=lr_warmup_iters,
                                  start_weight_decay=0.0, end_weight_decay=0.0),
        dataset=RLPTDataProvider(),
        logger=LoggerConfig(log_interval=1, tensorboard_dir=str(out_dir / "tb")),
        tokenizer=TokenizerConfig(tokenizer_type="NullTokenizer", vocab_size=tokenizer_vocab_size),
        checkpoint=CheckpointConfig(save=str(out_dir / "ckpt"), load=str(out_dir / "ckpt"),
                                    save_interval=save_interval or train_iters, ckpt_format="torch_dist",
                                    async_save=False),
        dist=DistributedInitConfig(distributed_backend="nccl" if cuda else "gloo"),
        rng=RNGConfig(seed=seed),
    )
