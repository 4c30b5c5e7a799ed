"""``rlpt eval``: a trained checkpoint against a base checkpoint, the paper's way (docs/METHOD.md).

Each model greedily continues every prefix for N tokens; the continuations are then judged:
safety rate and factuality score per model (pointwise), and the quality win rate of the trained
model against the base model (pairwise, asked in both presentation orders; identical texts count
0.5 without asking, so the base model against itself scores exactly 0.5). Judges:

* ``world``: the synthetic world's exact oracle (:mod:`rlpt_plugin.world.evaluate`). It checks
  claims against the knowledge base; the reference only helps it find the subject.
* ``openai``: the plugin's :class:`~rlpt_plugin.judge.Judge` over an OpenAI-protocol teacher, one
  Judge per axis sharing one client. Calls per prefix: quality 2 (0 when the two texts are
  identical), safety 2 (one per model), factuality 2 with a reference, else 1 (see below).

Factuality reference. A prefix's ``--reference-field`` value (its true continuation) when the
record has a non-empty one; otherwise the base model's continuation stands in for it, and on such
prefixes the base model's own factuality is not judged by the LLM (it would be compared with
itself): it is ``null`` there and the base summary averages over the other prefixes. The world
oracle still scores both (its ground truth is the knowledge base).

Loading checkpoints. Both checkpoints are loaded into the model of ONE job config: the recipe
with the given overrides (those of the training run), so the architecture, the parallel layout
(TP/PP/DP from the overrides, single process or torchrun) and the vocabulary are those the user
trained with. The pieces, all public Bridge 0.3.1 / megatron-core API:

1. torch.distributed from the usual env (``launch._single_process_env`` without torchrun) with the
   recipe's ``dist.distributed_backend``; megatron's parallel state and RNG from the model
   provider's own ``initialize_model_parallel(seed=rng.seed)``. Bridge's ``initialize_megatron``
   would also work, but needs a validated training config, a micro-batch calculator and a dataset
   helper build that generation never uses.
2. ``megatron.bridge.training.model_load_save.build_and_load_model(iter_dir, cfg.model,
   skip_temp_dist_context=True)``: builds the model from the provider (no DDP, no optimizer) and
   loads the weights with Bridge's own dist-checkpoint reader, which reshards from any TP/PP
   layout. ``load_megatron_model`` was not used: it rebuilds the model from the checkpoint's
   ``run_config.yaml`` and forces TP = PP = 1.

Virtual pipeline stages are switched off (``greedy_continuations`` drives one chunk; the
checkpoint reshards). Random initialisation is skipped (the weights are loaded). Data-parallel
ranks continue disjoint shares of the prefixes, gathered afterwards; rank 0 judges and writes.
A checkpoint argument is a Bridge checkpoint root (its ``latest_checkpointed_iteration.txt``
picks the iteration) or one ``iter_XXXXXXX`` folder.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

from rlpt_plugin.eval_scoring import (MODELS, EvalError, JudgeSpec, format_table, judge_openai, read_prefixes,
                                      score_world, summarize)
from rlpt_plugin.rl.context import row_context
from rlpt_plugin.teacher.redact import redact_url

__all__ = ["EvalError", "EvalRequest", "JudgeSpec", "resolve_checkpoint", "run_eval"]


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def resolve_checkpoint(path: str | Path, what: str) -> tuple[Path, int | None]:
    """(the ``iter_XXXXXXX`` folder to load, its iteration) for a root or an iteration folder."""
    p = Path(path)
    if not p.is_dir():
        raise EvalError(f"`--{what}` checkpoint {str(p)!r} does not exist or is not a directory")
    if (p / "metadata.json").is_file():  # a dist-checkpoint folder itself
        digits = p.name.removeprefix("iter_")
        return p, int(digits) if digits.isdigit() else None
    tracker = p / "latest_checkpointed_iteration.txt"
    if not tracker.is_file():
        raise EvalError(f"`--{what}` {str(p)!r} is neither a Megatron dist-checkpoint (no "
                        "metadata.json) nor a checkpoint root (no latest_checkpointed_iteration.txt)")
    text = tracker.read_text().strip()
    folder = p / ("release" if text == "release" else f"iter_{int(text):07d}" if text.isdigit() else "?")
    if not (folder / "metadata.json").is_file():
        raise EvalError(f"`--{what}` {str(p)!r}: latest_checkpointed_iteration.txt says {text!r}, "
                        "but that checkpoint folder is missing or incomplete")
    return folder, int(text) if text.isdigit() else None


@dataclass(frozen=True)
class EvalRequest:
    recipe: str
    trained: str
    base: str
    prefixes: str
    tokenizer: str
    suffix_length: int
    out_dir: str
    overrides: tuple[str, ...] = ()
    text_field: str = "text"
    reference_field: str = "reference"
    judge: JudgeSpec = field(default_factory=JudgeSpec)


# ---------------------------------------------------------------------------------------------
# Generation (collective over every rank)
# ---------------------------------------------------------------------------------------------
def _init_parallel(cfg: Any) -> bool:
    """torch.distributed + megatron parallel state for ``cfg``; True if we created the group."""
    from rlpt_plugin.megatron.host.launch import _single_process_env

    created = False
    if not dist.is_initialized():
        _single_process_env()
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(cfg.dist.distributed_backend)
        created = True
    cfg.model.initialize_model_parallel(seed=cfg.rng.seed)
    return created


def _load(cfg: Any, folder: Path) -> torch.nn.Module:
    """The recipe's model (first and only chunk) with the weights of ``folder``."""
    from megatron.bridge.training.model_load_save import build_and_load_model
    from megatron.core.dist_checkpointing.core import CheckpointingException
    from torch.distributed.checkpoint.api import CheckpointException  # a BaseException

    try:
        chunks = build_and_load_model(str(folder), cfg.model, use_cpu_init=not torch.cuda.is_available(),
                                      skip_temp_dist_context=True)
    except (CheckpointException, CheckpointingException, RuntimeError, KeyError, ValueError) as err:
        if isinstance(err, CheckpointException) and err.failures:  # the first rank's own error
            err = next(iter(err.failures.values()))[0]  # type: ignore[assignment]
        why = " ".join(str(err).split())[:300] or type(err).__name__
        raise EvalError(f"checkpoint {str(folder)!r} does not load into the recipe's model (are the "
                        f"recipe and overrides those of its training run?): {why}") from None
    return chunks[0]


def _gather(mine: list[int], tokens: list[list[int]], total: int) -> list[list[int]]:
    """Every rank's share (data-parallel replicas hold disjoint ones) merged in prefix order."""
    shares: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(shares, (mine, tokens))
    out: list[list[int] | None] = [None] * total
    for indices, toks in shares:
        for i, t in zip(indices, toks):
            out[i] = t
    assert all(t is not None for t in out), "a prefix was continued by no data-parallel rank"
    return out  # type: ignore[return-value]


def continue_prefixes(cfg: Any, checkpoints: Mapping[str, Path], prefixes: Sequence[Sequence[int]], *,
                      max_new_tokens: int, vocab_size: int, eos_id: int | None) -> dict[str, list[list[int]]]:
    """Greedy continuations of ``prefixes`` by each checkpoint (loaded one after the other; a
    folder named twice is run once). Collective: every rank calls it and gets the result."""
    from megatron.bridge.training.initialize import destroy_global_state

    from rlpt_plugin.megatron import parallel
    from rlpt_plugin.megatron.eval.evaluate import greedy_continuations

    cfg.model.virtual_pipeline_model_parallel_size = None
    cfg.model.perform_initialization = False
    created = _init_parallel(cfg)
    try:
        lay = parallel.layout()
        mine = list(range(lay.dp_rank, len(prefixes), lay.dp_size))
        done: dict[Path, list[list[int]]] = {}
        for folder in checkpoints.values():
            if folder in done:
                continue
            model = _load(cfg, folder)
            tokens = greedy_continuations(model, [prefixes[i] for i in mine], max_new_tokens=max_new_tokens,
                                          vocab_size=vocab_size, eos_id=eos_id) if mine else []
            done[folder] = _gather(mine, tokens, len(prefixes))
            del model
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return {name: done[folder] for name, folder in checkpoints.items()}
    finally:
        destroy_global_state()
        if created:
            dist.destroy_process_group()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    tmp.replace(path)


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------
def run_eval(req: EvalRequest) -> dict[str, Any] | None:
    """Generate, judge, write ``<out_dir>/eval.json`` and print the table. Returns the report on
    rank 0, None on the other ranks. User mistakes raise :class:`EvalError` (or ConfigError)."""
    began = time.perf_counter()
    folders = {"trained": resolve_checkpoint(req.trained, "trained"), "base": resolve_checkpoint(req.base, "base")}
    prefixes = read_prefixes(req.prefixes, req.text_field, req.reference_field)
    req.judge.check()
    from rlpt_plugin.data.tokenizer import load_tokenizer

    tok = load_tokenizer(req.tokenizer)  # TokenizerError is a ValueError
    from rlpt_plugin.megatron.host.bridge_cpu import enable_bridge_cpu

    enable_bridge_cpu()  # before Bridge's modules load (no-op with CUDA present)
    from rlpt_plugin.megatron.host.launch import build_config

    cfg = build_config(req.recipe, req.out_dir, list(req.overrides))
    seq, n = cfg.model.seq_length, req.suffix_length
    if not 1 <= n <= seq:
        raise EvalError(f"`--suffix-length` must be in [1, model.seq_length={seq}], but is {n}")
    if cfg.model.vocab_size is None:  # as Bridge's setup(): the tokenizer's size, padded
        from megatron.bridge.training.tokenizers.tokenizer import build_tokenizer

        cfg.model.vocab_size, cfg.model.should_pad_vocab = build_tokenizer(cfg.tokenizer).vocab_size, True
    if tok.vocab_size > cfg.model.vocab_size:
        raise EvalError(f"tokenizer {req.tokenizer!r} has {tok.vocab_size} ids, more than the recipe's "
                        f"model.vocab_size ({cfg.model.vocab_size})")
    keep = seq + 1 - n  # the context training conditions a suffix of N tokens on
    ids = [list(row_context(tok.encode(p.text), n, seq)) for p in prefixes]
    empty = [i for i, x in enumerate(ids) if not x]
    if empty:
        raise EvalError(f"prefix {empty[0] + 1} of {req.prefixes} encodes to no tokens")
    tokens = continue_prefixes(cfg, {name: f for name, (f, _) in folders.items()}, ids, max_new_tokens=n,
                               vocab_size=tok.vocab_size, eos_id=tok.eod_id)
    generated = time.perf_counter()
    # The group may be gone (we destroy the one we created); the launcher's RANK then tells.
    rank = dist.get_rank() if dist.is_initialized() else int(os.environ.get("RANK", "0"))
    if rank != 0:
        return None
    texts = {name: [tok.decode(t[:-1] if t and t[-1] == tok.eod_id else t) for t in tokens[name]]
             for name in MODELS}
    metrics: dict[str, float] = {}
    if req.judge.kind == "world":
        seed = cfg.rlpt.judge.world_seed if req.judge.world_seed is None else req.judge.world_seed
        entities = cfg.rlpt.judge.world_entities if req.judge.world_entities is None else req.judge.world_entities
        scores = score_world(prefixes, texts, seed, entities)
        judge_info: dict[str, Any] = {"world_seed": seed, "world_entities": entities}
    else:
        scores, metrics = asyncio.run(judge_openai(req.judge, prefixes, texts, seed=cfg.rng.seed))
        judge_info = {"endpoints": [redact_url(u) for u in req.judge.endpoints], "model": req.judge.model,
                      "samples": req.judge.samples, "temperature": req.judge.temperature}
    report: dict[str, Any] = {
        "judge": req.judge.kind, "judge_settings": judge_info, "judge_metrics": metrics,
        "recipe": req.recipe, "overrides": list(req.overrides), "prefixes_file": str(req.prefixes),
        "suffix_length": n, "context_tokens": keep, "tokenizer": req.tokenizer,
        "checkpoints": {name: {"path": str(f), "iteration": it} for name, (f, it) in folders.items()},
        "summary": {name: summarize(scores[name], prefixes) for name in MODELS},
        "seconds": {"generate": generated - began, "judge": time.perf_counter() - generated},
        "prefixes": [
            {"prefix": p.text, "reference": p.reference,
             "factuality_reference": "prefix" if p.reference is not None else "base",
             **{name: {"continuation": texts[name][k], "tokens": tokens[name][k], **scores[name][k]}
                for name in MODELS}}
            for k, p in enumerate(prefixes)],
    }
    out = Path(req.out_dir) / "eval.json"
    _write_json(out, report)
    print(format_table(report))
    print(f"per-prefix continuations and scores: {out}")
    return report
