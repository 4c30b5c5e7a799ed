"""A tiny megatron-core GPT for multi-process tests, with layout-independent weights.

Every parameter's FULL (unsharded) value is a pure function of its global name, so TP1, TP2,
PP2 and DP2 builds start from identical weights: each rank generates the full tensor and keeps
its shard. Gradients are returned per global name with their TP partition, for reassembly.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import torch
from megatron.core import parallel_state as ps
from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed
from megatron.core.transformer import TransformerConfig

VOCAB = 128


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1

    def init(self) -> None:
        ps.destroy_model_parallel()
        ps.initialize_model_parallel(self.tp, self.pp)
        model_parallel_cuda_manual_seed(1234)


def transformer_config(num_layers: int = 4, num_query_groups: int | None = None) -> TransformerConfig:
    return TransformerConfig(
        num_layers=num_layers, hidden_size=32, num_attention_heads=4, ffn_hidden_size=64,
        num_query_groups=num_query_groups,
        use_cpu_initialization=True, hidden_dropout=0.0, attention_dropout=0.0,
        bias_activation_fusion=False, bias_dropout_fusion=False, masked_softmax_fusion=False,
        persist_layer_norm=False, apply_rope_fusion=False, gradient_accumulation_fusion=False,
        pipeline_dtype=torch.float32, batch_p2p_comm=False, normalization="RMSNorm",
        tensor_model_parallel_size=ps.get_tensor_model_parallel_world_size(),
        pipeline_model_parallel_size=ps.get_pipeline_model_parallel_world_size())


def _global_name(model: GPTModel, name: str) -> str:
    # Local layer indices restart at 0 on every pipeline stage; layer_number is global (1-based).
    match = re.match(r"(.*decoder\.layers\.)(\d+)(\..*)", name)
    if not match:
        return name
    layer = model.decoder.layers[int(match.group(2))]
    return f"{match.group(1)}{layer.layer_number - 1}{match.group(3)}"


def _full_value(global_name: str, full_shape: torch.Size, weight_seed: int) -> torch.Tensor:
    digest = hashlib.sha256(f"{weight_seed}:{global_name}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    value = torch.randn(full_shape, generator=gen, dtype=torch.float64) * 0.2
    if "layernorm" in global_name or "norm" in global_name.split(".")[-2]:
        value = 1.0 + 0.1 * value
    return value.float()


def _partition(param: torch.nn.Parameter) -> int | None:
    return param.partition_dim if getattr(param, "tensor_model_parallel", False) else None


def build_model(weight_seed: int = 0, num_layers: int = 4, wrap_ddp: bool = True,
                num_query_groups: int | None = None) -> torch.nn.Module:
    config = transformer_config(num_layers, num_query_groups)
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(normalization="RMSNorm"),
                     vocab_size=VOCAB, max_sequence_length=64, position_embedding_type="rope",
                     pre_process=ps.is_pipeline_first_stage(), post_process=ps.is_pipeline_last_stage(),
                     share_embeddings_and_output_weights=False)
    tp, tp_rank = ps.get_tensor_model_parallel_world_size(), ps.get_tensor_model_parallel_rank()
    with torch.no_grad():
        for name, param in model.named_parameters():
            dim = _partition(param)
            full_shape = list(param.shape)
            if dim is not None:
                full_shape[dim] *= tp
            full = _full_value(_global_name(model, name), torch.Size(full_shape), weight_seed)
            param.copy_(full.chunk(tp, dim)[tp_rank] if dim is not None else full)
    if not wrap_ddp:
        return model
    ddp = DistributedDataParallel(config, DistributedDataParallelConfig(grad_reduce_in_fp32=True),
                                  module=model)
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    return ddp


def named_grads(ddp: DistributedDataParallel) -> dict[str, tuple[int | None, int, torch.Tensor]]:
    """global name -> (TP partition dim or None, tp rank, gradient) for this rank's params."""
    model = ddp.module
    tp_rank = ps.get_tensor_model_parallel_rank()
    return {_global_name(model, name): (_partition(p), tp_rank, p.main_grad.detach().clone())
            for name, p in model.named_parameters()}


def assemble(per_rank: list[dict[str, tuple[int | None, int, torch.Tensor]]]) -> dict[str, torch.Tensor]:
    """Full gradients from the ranks' shards (replicas must agree; TP shards concatenate)."""
    shards: dict[str, dict[int, torch.Tensor]] = {}
    dims: dict[str, int | None] = {}
    for grads in per_rank:
        for name, (dim, tp_rank, grad) in grads.items():
            dims[name] = dim
            previous = shards.setdefault(name, {}).setdefault(tp_rank, grad)
            torch.testing.assert_close(previous, grad, rtol=0, atol=0,
                                       msg=f"replicas disagree on the gradient of {name}")
    full = {}
    for name, by_rank in shards.items():
        parts = [by_rank[r] for r in sorted(by_rank)]
        full[name] = torch.cat(parts, dims[name]) if dims[name] is not None else parts[0]
    return full
