"""Megatron's GPTModel on prefix-shared rows: a per-row block mask and RoPE from position ids.

Two things the shared rows (rlpt_plugin/rl/shared_rows.py) need from the model, and how:

- **Mask.** ``GPTModel.forward`` takes an explicit ``[B, 1, S, S]`` bool mask (True = masked).
  Megatron's local ``DotProductAttention`` applies it through ``FusedScaleMaskSoftmax``'s torch
  path (``attention_mask_func``: masked scores set to -10000, whose softmax weight underflows to
  exactly 0 in fp32). Its fused CUDA kernel for a causal layer (``ScaledUpperTriangMaskedSoftmax``,
  taken when ``masked_softmax_fusion`` is on and the scores are fp16/bf16) ignores the mask, and so
  does Transformer Engine's attention built with the causal mask type: shared rows are refused
  there (:func:`shared_rows_errors`).
- **Positions.** megatron-core 0.16's GPTModel feeds ``position_ids`` only to a learned absolute
  position embedding; RoPE is computed for positions ``0 .. S-1`` of every row, whatever
  ``position_ids`` says. :func:`rope_from_position_ids` registers, for one forward call, a hook on
  the model's ``RotaryEmbedding`` that returns the frequencies gathered at each token's position
  id, ``[S, B, 1, D]``, which the unfused ``apply_rotary_pos_emb`` broadcasts over heads (the same
  shape megatron's own mRoPE produces). The fused RoPE kernels take ``[S, 1, 1, D]`` only: refused.

The unpacked path never enters here: its micro-batches keep the plain causal mask and the
model's own RoPE, bit for bit as before.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from megatron.core.models.common.embeddings.rotary_pos_embedding import RotaryEmbedding
from megatron.core.transformer.dot_product_attention import DotProductAttention

from rlpt_plugin.rl.packing import MicroBatch
from rlpt_plugin.rl.shared_rows import prefix_shared_mask

ROPE_TYPES = ("rope", "learned_absolute", "none")


def _inner(chunk: torch.nn.Module) -> torch.nn.Module:
    while hasattr(chunk, "module"):  # DDP, Float16Module
        chunk = chunk.module
    return chunk


def _rotary_modules(model: torch.nn.Module) -> list[torch.nn.Module]:
    found = getattr(model, "_rlpt_rotary", None)
    if found is None:
        found = [m for m in model.modules() if type(m) is RotaryEmbedding]
        object.__setattr__(model, "_rlpt_rotary", found)  # a cache, not a submodule
    return found


@contextlib.contextmanager
def rope_from_position_ids(model: torch.nn.Module, position_ids_BS: torch.Tensor) -> Iterator[None]:
    """Within the block, the model's RoPE rotates token ``(b, s)`` by ``position_ids_BS[b, s]``."""
    index_SB = position_ids_BS.t()

    def gather(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        # output: [L, 1, 1, D] frequencies of positions 0..L-1 (L >= every position id).
        if output.dim() != 4 or output.shape[1] != 1 or output.shape[2] != 1:
            raise RuntimeError(f"rlpt shared rows: RotaryEmbedding returned shape {tuple(output.shape)}, "
                               "expected [L, 1, 1, D] (context parallelism is not supported)")
        return output[:, 0][index_SB]  # [S, B, 1, D]

    handles = [m.register_forward_hook(gather) for m in _rotary_modules(model)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


class MaskCache:
    """The causal mask per (length, device), built once (megatron's default is built on cuda)."""

    def __init__(self) -> None:
        self._causal: dict[tuple[int, str], torch.Tensor] = {}

    def causal(self, seq_length: int, device: torch.device) -> torch.Tensor:
        key = (seq_length, str(device))
        if key not in self._causal:
            self._causal[key] = torch.triu(torch.ones(seq_length, seq_length, dtype=torch.bool,
                                                      device=device), 1)[None, None]
        return self._causal[key]


def forward_rows(model: torch.nn.Module, mb: MicroBatch, masks: MaskCache) -> torch.Tensor:
    """``model(tokens, positions, mask, labels=labels)`` for an unpacked or shared micro-batch
    (already on the model's device): [B, S] per-token cross-entropy on the last stage."""
    if not mb.shared:
        mask = masks.causal(mb.tokens_BS.shape[1], mb.tokens_BS.device)
        return model(mb.tokens_BS, mb.position_ids_BS, mask, labels=mb.labels_BS)
    mask = prefix_shared_mask(mb.segment_ids_BS)
    with rope_from_position_ids(model, mb.position_ids_BS):
        return model(mb.tokens_BS, mb.position_ids_BS, mask, labels=mb.labels_BS)


def shared_rows_errors(chunks: Sequence[torch.nn.Module]) -> list[str]:
    """Why the built model cannot compute prefix-shared rows exactly ([] when it can)."""
    errors: list[str] = []
    for i, chunk in enumerate(chunks):
        model = _inner(chunk)
        config = getattr(model, "config", None)
        kind = getattr(model, "position_embedding_type", None)
        if kind not in ROPE_TYPES:
            errors.append(f"model chunk {i}: position_embedding_type is {kind!r}; shared rows support "
                          f"{', '.join(ROPE_TYPES)}")
        for name in ("apply_rope_fusion", "fused_single_qkv_rope", "multi_latent_attention", "flash_decode"):
            if getattr(config, name, False):
                errors.append(f"model chunk {i}: `model.{name}` is True; the fused RoPE/attention path "
                              "rotates every row by positions 0..S-1 and cannot follow the shared rows' "
                              "position ids")
        if getattr(config, "context_parallel_size", 1) != 1:
            errors.append(f"model chunk {i}: context parallelism splits the rows the shared mask spans")
        cores = [m for m in model.modules() if m.__class__.__name__.endswith("DotProductAttention")]
        foreign = sorted({type(m).__name__ for m in cores if not isinstance(m, DotProductAttention)})
        if foreign:
            errors.append(f"model chunk {i}: the attention is {', '.join(foreign)} (Transformer Engine), "
                          "whose causal mask type ignores the explicit per-row mask; shared rows need "
                          "megatron's local DotProductAttention (transformer_layer_spec=local)")
        for m in cores:
            softmax = getattr(m, "scale_mask_softmax", None)
            if isinstance(m, DotProductAttention) and softmax is not None \
                    and softmax.scaled_masked_softmax_fusion and softmax.input_in_float16:
                errors.append(f"model chunk {i}: `model.masked_softmax_fusion` is True in fp16/bf16: the "
                              "fused causal softmax kernel ignores the explicit mask")
                break
    return list(dict.fromkeys(errors))
