"""Spawned bodies for the rollout sampler tests."""

from __future__ import annotations

from typing import Any

import torch

from rlpt_plugin.megatron.candidates.rollout import RolloutSpec, generate_rollouts
from tests.distributed.tiny_gpt import VOCAB, Layout, build_model

PREFIXES = [[5, 6, 7, 8, 9, 10], [11, 12, 13], [20, 21, 22, 23, 24], [30, 31, 32]]  # one length bucket
# lengths 3, 14, 4, 20 with N = 6: three static batches ({3, 4}, {14}, {20})
SPREAD = [[40, 41, 42], list(range(50, 64)), [70, 71, 72, 73], list(range(80, 100))]


def rollouts(case: dict[str, Any]) -> dict[str, Any]:
    Layout(case.get("tp", 1), case.get("pp", 1)).init()
    model = build_model(weight_seed=0, wrap_ddp=False, num_query_groups=case.get("groups"))
    spec = RolloutSpec(num_samples=3, max_new_tokens=6, vocab_size=VOCAB - 4, eos_id=case.get("eos"),
                       seed=11, share_prefill=case.get("share", True), use_kv_cache=case.get("cache", True),
                       temperature=case.get("temperature", 1.0), top_p=case.get("top_p", 1.0),
                       length_buckets=case.get("buckets", True), shared_kv=case.get("shared_kv", True))
    out = generate_rollouts(model, SPREAD if case.get("spread") else PREFIXES, spec, step=3)
    return {"case": case, "tokens": out.tokens, "logps": out.logps, "forward_tokens": out.forward_tokens,
            "kv_cache_bytes": out.kv_cache_bytes, "kv_path": out.kv_path}


def run_rollout_cases(rank: int, world_size: int, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    torch.manual_seed(0)
    return [rollouts(c) for c in cases]


def training_logps(rank: int, world_size: int, tokens: list[list[list[int]]],
                   prefixes: list[list[int]] = PREFIXES) -> list[list[list[float]]]:
    """Per-token log-probs of prefix + rollout from an ordinary training-style forward."""
    from rlpt_plugin.megatron.step.forward_step import causal_attention_mask

    Layout(1, 1).init()
    model = build_model(weight_seed=0, wrap_ddp=False).eval()
    out: list[list[list[float]]] = []
    for prefix, samples in zip(prefixes, tokens):
        out.append([])
        for toks in samples:
            seq = torch.tensor([prefix + toks])
            inp, labels = seq[:, :-1], seq[:, 1:]
            pos = torch.arange(inp.shape[1])[None]
            with torch.no_grad():
                ce = model(inp, pos, causal_attention_mask(inp.shape[1], "cpu"), labels=labels)
            out[-1].append((-ce[0, len(prefix) - 1:]).tolist())
    return out
