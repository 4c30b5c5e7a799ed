"""Evaluation with the live Megatron model: greedy continuations and held-out NLL.

Both run through the same code as training (the KV-cached sampler of rollout.py at temperature
0, and the forward-only schedule of reference.py), so they work under TP and PP. The
:class:`ContinuationEval` callback runs them when ``pretrain()`` finishes and writes one JSON
file; judging the continuations is the caller's business (the world's oracle in the demo).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import torch
from megatron.bridge.training.callbacks import Callback, CallbackContext

from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.candidates.reference import score_continuations
from rlpt_plugin.megatron.candidates.rollout import RolloutSpec, generate_rollouts
from rlpt_plugin.rl.context import row_context
from rlpt_plugin.types import Tokenizer


def greedy_continuations(model: torch.nn.Module, prefixes: Sequence[Sequence[int]], *, max_new_tokens: int,
                         vocab_size: int, eos_id: int | None = None, batch_size: int = 64) -> list[list[int]]:
    """The greedy ``max_new_tokens``-token continuation of every prefix (collective over TP/PP).
    Prefixes are batched by length (a batch prefills its shortest prefix at once)."""
    spec = RolloutSpec(num_samples=1, max_new_tokens=max_new_tokens, vocab_size=vocab_size,
                       temperature=0.0, eos_id=eos_id)
    order = sorted(range(len(prefixes)), key=lambda i: len(prefixes[i]))
    out: list[list[int]] = [[] for _ in prefixes]
    for start in range(0, len(order), batch_size):
        chunk = order[start: start + batch_size]
        rollouts = generate_rollouts(model, [prefixes[i] for i in chunk], spec, step=0)
        for i, tokens in zip(chunk, rollouts.tokens):
            out[i] = list(tokens[0])
    return out


def mean_nll(model: torch.nn.Module, texts: Sequence[Sequence[int]], *, seq_length: int,
             micro_batch_size: int) -> float:
    """Per-token NLL of the last ``seq_length + 1`` tokens of every text, after the first of
    them (same value on every rank)."""
    windows = [list(t)[-(seq_length + 1):] for t in texts]
    logps = score_continuations(model, [(w[:1], w[1:]) for w in windows],
                                seq_length=seq_length, micro_batch_size=micro_batch_size)
    device = next(model.parameters()).device
    total = torch.tensor([-sum(sum(lp) for lp in logps), float(sum(len(lp) for lp in logps))],
                         dtype=torch.float64, device=device)
    total = parallel.pp_broadcast_from_last(total).cpu()
    return float(total[0] / total[1])


class ContinuationEval(Callback):
    """At the end of training: greedy continuations of ``prefixes`` (cut from the left to the
    ``seq_length + 1 - max_new_tokens`` tokens training conditions a suffix on) and the NLL of
    ``nll_texts``, written as JSON to ``out_path`` (by rank 0)."""

    def __init__(self, tokenizer: Tokenizer, prefixes: Sequence[str], nll_texts: Sequence[str], *,
                 max_new_tokens: int, out_path: str | Path):
        self.tokenizer, self.prefixes, self.nll_texts = tokenizer, list(prefixes), list(nll_texts)
        self.max_new_tokens, self.out_path = max_new_tokens, Path(out_path)
        self.result: dict | None = None

    def evaluate(self, model: torch.nn.Module, *, seq_length: int, micro_batch_size: int) -> dict:
        began = time.perf_counter()
        tok = self.tokenizer
        contexts = [list(row_context(tok.encode(p), self.max_new_tokens, seq_length)) for p in self.prefixes]
        ids = greedy_continuations(model, contexts,
                                   max_new_tokens=self.max_new_tokens, vocab_size=tok.vocab_size,
                                   eos_id=tok.eod_id)
        nll = mean_nll(model, [tok.encode(t) for t in self.nll_texts], seq_length=seq_length,
                       micro_batch_size=micro_batch_size)
        return {"continuations": [tok.decode(c) for c in ids], "heldout_nll": nll,
                "seconds": time.perf_counter() - began}

    def on_train_end(self, context: CallbackContext) -> None:
        cfg = context.state.cfg
        self.result = self.evaluate(context.model[0], seq_length=cfg.model.seq_length,
                                    micro_batch_size=cfg.train.micro_batch_size)
        self.result["step"] = int(context.state.train_state.step)
        if torch.distributed.get_rank() == 0:
            self.out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.result, indent=1))
            tmp.replace(self.out_path)
