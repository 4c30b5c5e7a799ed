"""Rollout decoding with a prefix's KV entries kept once for its K rollouts, not K times.

Megatron's static inference path (``StaticInferenceContext``) gives every row its own KV cache, so
after the shared prefill each prefix is copied to its K rollout rows, and it caches keys BEFORE
RoPE: every decode step rotates the whole cached key again, (prefix + generated) x K rows x every
layer. At the paper-shaped geometry (8 prefixes of 480 tokens, K = 16, N = 32, 4 layers h128)
that re-rotation and the reads of the K copies were most of the rollout time.

:class:`SharedKV` replaces the forward of every self-attention module of the policy for the
duration of one static batch (:meth:`SharedKV.installed`). The replacement uses the module's own
parts -- ``get_query_key_value_tensors`` (QKV projection, qk-norm, the TP split of heads) and
``linear_proj`` (the output projection and its TP all-reduce) -- and megatron's
``apply_rotary_pos_emb`` on the NEW tokens only; keys are cached after RoPE. Its attention is one
softmax over [the prefix's keys, shared by its K rows ; the row's own keys]: the prefill writes
the prefix cache (one row per prefix), every later step (one token per row) appends to the row's
own cache. Norms, residuals, the MLP and the pipeline hand-offs stay megatron's.

Prefixes of different lengths share one static batch without forced decode steps: the prefill
left-pads them to the longest (``pad`` tokens each; a padded key is never attended, a padded query
attends to itself only, so every value stays finite), and every token carries its own position
(``positions``, for RoPE), so row r's j-th sampled token sits at position len(prefix) + j, as in
an unpadded run, while every row writes its j-th own entry into the same slot.

Where a model has something this attention does not compute (multi-latent attention, an output
gate, sliding windows, a non-vanilla softmax, sequence or context parallelism, flash decode,
packed sequences), :func:`unsupported` names it and the sampler keeps megatron's path.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from types import MethodType
from typing import Any, Iterator

import torch
import torch.nn.functional as F
from megatron.core.models.common.embeddings.rope_utils import apply_rotary_pos_emb
from megatron.core.transformer.attention import SelfAttention

ROPE_TYPES = ("rope", "learned_absolute", "none")


def _attention_modules(model: torch.nn.Module) -> list[SelfAttention]:
    return [m for m in model.modules() if isinstance(m, SelfAttention)]


def unsupported(model: torch.nn.Module) -> str | None:
    """Why the shared-KV decode cannot serve ``model`` exactly, or None when it can."""
    from megatron.core.utils import get_attr_wrapped_model

    config = get_attr_wrapped_model(model, "config")
    try:
        kind = get_attr_wrapped_model(model, "position_embedding_type")
    except RuntimeError:  # not a GPTModel: megatron's path decides
        return "the model has no position_embedding_type (not a GPTModel)"
    checks = (
        (kind not in ROPE_TYPES, f"position embedding {kind!r}"),
        (getattr(config, "multi_latent_attention", False), "multi-latent attention"),
        (getattr(config, "attention_output_gate", False), "an attention output gate"),
        (getattr(config, "window_size", None) is not None, "sliding-window attention"),
        (getattr(config, "softmax_type", "vanilla") != "vanilla", f"softmax_type {getattr(config, 'softmax_type', '')!r}"),
        (getattr(config, "sequence_parallel", False), "sequence parallelism"),
        (getattr(config, "context_parallel_size", 1) != 1, "context parallelism"),
        (getattr(config, "flash_decode", False), "flash decode"),
        (getattr(config, "fused_single_qkv_rope", False), "fused QKV RoPE"),
        (getattr(config, "rotary_interleaved", False), "interleaved RoPE"),
        (not _attention_modules(model) and getattr(config, "num_layers", 0) > 0, "no self-attention modules"),
    )
    for failed, what in checks:
        if failed:
            return f"the model uses {what}"
    return None


class SharedKV:
    """The KV entries of one static batch: ``num_prefixes`` prefixes, ``k`` rows each (prefix-major).

    ``prefix[layer]``: (key, value) ``[G, groups, L, d]`` written by the prefill (G rows, each
    left-padded by ``pad[g]`` tokens to the longest prefix, L); ``own[layer]``: ``[G*k, groups, T,
    d]`` preallocated for ``max_own`` tokens, one per later step. Before each forward the runner
    sets :attr:`positions` (``[rows, s]``: each token's position, for RoPE) and :attr:`slot` (the
    decode step's own-entry index; the prefill ignores it).
    """

    def __init__(self, num_prefixes: int, k: int, max_own: int, pad: torch.Tensor):
        self.g, self.k, self.max_own = num_prefixes, k, max_own
        self.pad = pad  # [G] left padding of each prefix in the prefill
        self.positions = torch.zeros(0, 0, dtype=torch.long)
        self.slot = 0
        self.prefix_length = 0
        self._prefill_mask: torch.Tensor | None = None
        self._prefix_bias: torch.Tensor | None = None
        self.prefix: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.own: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def bytes(self) -> int:
        """Bytes the cache holds (the prefix entries once, the rows' own entries)."""
        return sum(t.numel() * t.element_size() for kv in (*self.prefix.values(), *self.own.values()) for t in kv)

    @contextmanager
    def installed(self, model: torch.nn.Module) -> Iterator["SharedKV"]:
        modules = _attention_modules(model)
        for module in modules:
            module.forward = MethodType(_forward_with(self), module)  # type: ignore[method-assign]
        try:
            yield self
        finally:
            for module in modules:
                del module.forward

    # -- the attention ------------------------------------------------------------------------

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        """``q`` ``[s, b, heads, d]``, ``k``/``v`` ``[s, b, groups, d]`` (after RoPE) -> context
        ``[s, b, heads, d]``. b = G: the prefill (s tokens each); b = G*k: one token per row.

        Query head h reads key group h // (heads / groups), as megatron's grouped-query attention;
        the queries are grouped to their key group instead of the keys repeated to the heads, so a
        decode step copies no cached entry."""
        s, b, heads, d = q.shape
        groups = k.shape[2]
        rep = heads // groups
        if layer not in self.prefix:  # the prefill: causal attention within each prefix
            if b != self.g:
                raise RuntimeError(f"SharedKV: the prefill has {b} rows, expected {self.g} prefixes")
            kp, vp = k.permute(1, 2, 0, 3).contiguous(), v.permute(1, 2, 0, 3).contiguous()  # [G, groups, s, d]
            self.prefix[layer] = (kp, vp)
            self.prefix_length = s
            # One fused kernel (torch's scaled-dot-product attention: flash attention on a CPU too):
            # the prefill is the part of a rollout whose attention grows with the prefix squared.
            masked = self._masks(s, q.device)
            qh = q.permute(1, 2, 0, 3)  # [G, heads, s, d]
            if self._prefix_bias is None:  # no padding: plain causal attention
                context = F.scaled_dot_product_attention(qh, kp, vp, is_causal=True, scale=scale, enable_gqa=rep > 1)
            else:
                context = F.scaled_dot_product_attention(qh, kp, vp, attn_mask=~masked[:, 0], scale=scale,
                                                         enable_gqa=rep > 1)
            return context.permute(2, 0, 1, 3)  # [s, G, heads, d]
        if s != 1 or b != self.g * self.k:
            raise RuntimeError(f"SharedKV: a decode step feeds one token to each of {self.g * self.k} rows, "
                               f"got {s} x {b}")
        t = self.slot  # this token's slot among the row's own entries
        if layer not in self.own:
            shape = (b, groups, self.max_own, d)
            self.own[layer] = (k.new_empty(shape), v.new_empty(shape))
        own_k, own_v = self.own[layer]
        own_k[:, :, t] = k[0]
        own_v[:, :, t] = v[0]
        kp, vp = self.prefix[layer]
        length = kp.shape[2]
        # The prefix part: the k rows of a prefix and the rep heads of a group in one matmul.
        qp = q[0].view(self.g, self.k, groups, rep, d).permute(0, 2, 1, 3, 4).reshape(self.g, groups, self.k * rep, d)
        scores_p = (qp @ kp.transpose(-1, -2)).float()  # [G, groups, k*rep, L]
        if self._prefix_bias is not None:  # -inf on the padded keys
            scores_p = scores_p + self._prefix_bias
        scores_p = scores_p.view(self.g, groups, self.k, rep, length).permute(0, 2, 1, 3, 4).reshape(b, groups, rep, length)
        # The row's own part: [R, groups, rep, d] against [R, groups, t+1, d].
        qr = q[0].view(b, groups, rep, d)
        scores_o = (qr @ own_k[:, :, : t + 1].transpose(-1, -2)).float()  # [R, groups, rep, t+1]
        probs = torch.softmax(torch.cat([scores_p, scores_o], dim=-1) * scale, dim=-1).to(v.dtype)
        probs_p = probs[..., :length].reshape(self.g, self.k, groups, rep, length).permute(0, 2, 1, 3, 4)
        context = (probs_p.reshape(self.g, groups, self.k * rep, length) @ vp)  # [G, groups, k*rep, d]
        context = context.view(self.g, groups, self.k, rep, d).permute(0, 2, 1, 3, 4).reshape(b, groups, rep, d)
        context = context + probs[..., length:] @ own_v[:, :, : t + 1]
        return context.reshape(1, b, heads, d)


    def _masks(self, s: int, device: torch.device) -> torch.Tensor:
        """The prefill's mask ``[G, 1, 1, s, s]`` (True = not attended): causal, and no padded key
        but a padded query's own; keeps the decode steps' bias for the padded prefix keys."""
        causal = torch.ones(s, s, dtype=torch.bool, device=device).triu(1)
        if self._prefill_mask is None or self._prefill_mask.shape[-1] != s:
            padded = torch.arange(s, device=device)[None, :] < self.pad.to(device)[:, None]  # [G, s]
            own = torch.eye(s, dtype=torch.bool, device=device)
            self._prefill_mask = (causal | (padded[:, None, :] & ~own))[:, None, None]
            bias = torch.zeros(self.g, 1, 1, s, device=device)
            self._prefix_bias = bias.masked_fill(padded[:, None, None, :], float("-inf")) if bool(padded.any()) else None
        return self._prefill_mask


def _forward_with(cache: SharedKV):
    def forward(self: SelfAttention, hidden_states: torch.Tensor, attention_mask: Any = None,
                key_value_states: Any = None, inference_context: Any = None, rotary_pos_emb: Any = None,
                *args: Any, **kwargs: Any) -> tuple[torch.Tensor, Any]:
        query, key, value = self.get_query_key_value_tensors(hidden_states, key_value_states)
        if rotary_pos_emb is not None:
            freqs = rotary_pos_emb[0] if isinstance(rotary_pos_emb, tuple) else rotary_pos_emb
            window = freqs[cache.positions.t().to(freqs.device)].squeeze(2)  # [s, b, 1, d]: each token's own
            query = apply_rotary_pos_emb(query, window, config=self.config)
            key = apply_rotary_pos_emb(key, window, config=self.config)
        d = query.shape[-1]
        scale = self.config.softmax_scale if getattr(self.config, "softmax_scale", None) else 1.0 / math.sqrt(d)
        context = cache.attend(self.layer_number, query, key, value, scale)
        return self.linear_proj(context.reshape(context.shape[0], context.shape[1], -1))

    return forward
