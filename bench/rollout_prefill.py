"""Rollout throughput and KV memory with and without shared KV, shared prefill, length buckets and
the KV cache, one run.

A 4-layer GPT (hidden 256) generates K rollouts of N tokens for B prefixes on this machine.
Prefixes have P tokens, or (``--min-prefix``) lengths spread evenly over [min, P] like store
windows cut anywhere in a document. Shared KV (the default) prefills the prefixes once, left-padded
to the longest, and keeps each prefix's KV entries once for its K rows
(rlpt_plugin/megatron/candidates/shared_kv.py); "megatron cache" is megatron's static inference
context, the shortest common part prefilled once and its cache copied to the K rows, the longer
prefixes' extra tokens fed one decode step at a time; unshared prefills all B*K rows. Length
buckets run prefixes N (shared KV: K x N) or more tokens apart as separate static batches; "one
batch" does not. Prints generated tokens per second, the ratios, and the KV cache per prefix (the largest
static batch's cache over its prefixes).

    .venv/bin/python bench/rollout_prefill.py [--prefix 256] [--min-prefix 256] [--k 8] [--new 32] [--batch 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _run(rank: int, world: int, args: dict) -> dict:
    import torch
    from megatron.core.models.gpt import GPTModel
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec

    from rlpt_plugin.megatron.candidates.rollout import RolloutSpec, generate_rollouts
    from tests.distributed.tiny_gpt import Layout, transformer_config

    torch.set_num_threads(2)
    Layout(1, 1).init()
    config = transformer_config(num_layers=4)
    config.hidden_size, config.ffn_hidden_size, config.num_attention_heads = 256, 1024, 8
    model = GPTModel(config=config, transformer_layer_spec=get_gpt_layer_local_spec(), vocab_size=4096,
                     max_sequence_length=args["prefix"] + args["new"] + 8,
                     position_embedding_type="rope").eval()
    gen = torch.Generator().manual_seed(0)
    b, low, high = args["batch"], args["min_prefix"] or args["prefix"], args["prefix"]
    lengths = [low + (high - low) * i // max(1, b - 1) for i in range(b)]
    prefixes = [torch.randint(1, 4096, (n,), generator=gen).tolist() for n in lengths]
    rates = {}
    for name, share, cache, buckets, shared_kv in (("shared KV", True, True, True, True),
                                                   ("megatron cache", True, True, True, False),
                                                   ("shared KV, one batch", True, True, False, True),
                                                   ("per-row prefill", False, True, True, False),
                                                   ("no KV cache", False, False, True, False)):
        spec = RolloutSpec(num_samples=args["k"], max_new_tokens=args["new"], vocab_size=4096, seed=1,
                           share_prefill=share, use_kv_cache=cache, length_buckets=buckets, shared_kv=shared_kv)
        generate_rollouts(model, prefixes[:1], spec, step=0)  # warm-up
        began = time.perf_counter()
        out = generate_rollouts(model, prefixes, spec, step=1)
        seconds = time.perf_counter() - began
        generated = sum(len(s) for samples in out.tokens for s in samples)
        rates[name] = (generated / seconds, seconds, out.forward_tokens, out.kv_bytes_per_prefix / 2**20)
    return rates


def main() -> None:
    from tests.distributed.harness import run_distributed

    parser = argparse.ArgumentParser()
    parser.add_argument("--prefix", type=int, default=256)
    parser.add_argument("--min-prefix", type=int, default=None, help="spread lengths over [min, prefix]")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--new", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    args = vars(parser.parse_args())
    (rates,) = run_distributed(_run, 1, Path(tempfile.mkdtemp()), args)
    base = rates["shared KV"][0]
    lengths = f"{args['min_prefix']}..{args['prefix']}" if args["min_prefix"] else str(args["prefix"])
    print(f"\nrollouts: {args['batch']} prefixes x {lengths} tokens, K={args['k']}, N={args['new']}, "
          "4 layers h256 fp32, 1 process")
    print(f"{'mode':<22}{'tokens/s':>10}{'seconds':>9}{'forward tokens':>16}{'vs shared KV':>14}{'KV MiB/prefix':>15}")
    for name, (rate, seconds, forward, kv) in rates.items():
        print(f"{name:<22}{rate:>10.1f}{seconds:>9.2f}{forward:>16}{rate / base:>14.2f}{kv:>15.2f}")


if __name__ == "__main__":
    main()
