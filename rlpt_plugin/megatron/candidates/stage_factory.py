"""Builds the in-loop candidate stage from a job config (``rlpt.data.source=store``).

Windows come from rewritten stores through the Megatron dataset (rlpt_plugin/megatron/
suffix_dataset.py, deterministic in the seed); rollouts from the live policy; verdicts from the
teacher judge behind OpenAI-protocol endpoints, with a verdict cache that survives restarts
(``rlpt.judge.backend: openai``), or from the synthetic world's exact oracle judge (``world``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlpt_plugin.config import RLPTConfig
from rlpt_plugin.data.tokenizer import load_tokenizer
from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.candidates.candidate_stage import CandidateStage
from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
from rlpt_plugin.megatron.candidates.rollout import RolloutSpec
from rlpt_plugin.megatron.data.suffix_dataset import SuffixDatasetConfig, build_suffix_datasets
from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group
from rlpt_plugin.rl.pool import CandidateGroup


Window = tuple[list[int], list[int], list[int] | None]


def store_windows(cfg: Any) -> tuple[Callable[[int], Window], Any, int]:
    """(group id -> (prefix, original, rewrite or None), tokenizer, suffix length N) over the
    job's stores through the Megatron dataset; the order is a pure function of rlpt.data.seed."""
    rlpt: RLPTConfig = cfg.rlpt
    tokenizer = load_tokenizer(rlpt.data.tokenizer)
    first = RewrittenStore(rlpt.data.stores[0], expect_tokenizer=tokenizer.fingerprint)
    suffix_length = int(first.manifest["suffix_length"])
    samples = cfg.train.train_iters * rlpt.data.groups_per_step
    dataset = build_suffix_datasets(SuffixDatasetConfig(
        random_seed=rlpt.data.seed, sequence_length=cfg.model.seq_length,
        blend=(list(rlpt.data.stores), None), split="100,0,0", suffix_length=suffix_length,
        tokenizer_fingerprint=tokenizer.fingerprint), [samples, None, None])[0]

    def window(group_id: int) -> Window:
        sample = dataset[group_id % len(dataset)]
        rewrite = sample["rewrite"].tolist() if sample["has_rewrite"] else None
        return sample["prefix"].tolist(), sample["original"].tolist(), rewrite

    return window, tokenizer, suffix_length


def original_groups(cfg: Any) -> Callable[[int], CandidateGroup]:
    """Unjudged groups holding the original suffix only: next-token training on the stores'
    windows (prefix + original suffix), the same text the in-loop run's LM term sees."""
    window, _, _ = store_windows(cfg)
    spec = PoolSpec(original=True, rewrite=False, rollouts=False)

    def group(group_id: int) -> CandidateGroup:
        prefix, original, _ = window(group_id)
        return build_group(PoolInput(group_id=group_id, prefix=prefix, original=original, rewrite=None,
                                     rollouts=()), spec, None)

    return group


def judge_cache_path(rlpt: RLPTConfig, save: str | None) -> Path | None:
    """This rank's verdict cache: ``<stem>.dp<rank><suffix>`` of ``rlpt.judge.cache`` (default
    ``<checkpoint.save>/rlpt_judge_cache.sqlite``), one file per data-parallel rank, opened only
    by the rank that talks to the judge. SQLite wants one writing process per file, and a shared
    file system's locks are not to be trusted with hundreds of writers. Each rank judges its own
    share of the groups, so a resumed run with the same layout finds its verdicts again."""
    base = Path(rlpt.judge.cache) if rlpt.judge.cache else (
        Path(save) / "rlpt_judge_cache.sqlite" if save else None)
    if base is None or not parallel.is_model_parallel_first():
        return None
    return base.with_name(f"{base.stem}.dp{parallel.layout().dp_rank:03d}{base.suffix}")


def build_stage(cfg: Any, model: list[torch.nn.Module]) -> CandidateStage:
    """The stage for a Bridge job config (``cfg.rlpt``, ``cfg.model``, ``cfg.train``, ...)."""
    rlpt: RLPTConfig = cfg.rlpt
    if len(model) != 1:
        raise ValueError("the candidate stage needs one model chunk per rank: virtual pipeline "
                         f"parallelism is not supported yet, but this rank has {len(model)} chunks")
    window, tokenizer, suffix_length = store_windows(cfg)
    c = rlpt.candidates
    thinking = c.thinking_spec(tokenizer, suffix_length)
    rollout = RolloutSpec(num_samples=max(1, c.num_rollouts),
                          max_new_tokens=suffix_length if thinking is None else thinking.max_new_tokens,
                          vocab_size=tokenizer.vocab_size, temperature=c.temperature, top_p=c.top_p,
                          eos_id=tokenizer.eod_id, seed=rlpt.data.seed, share_prefill=c.share_prefill,
                          length_buckets=c.length_buckets)
    cache = judge_cache_path(rlpt, getattr(cfg.checkpoint, "save", None)) if rlpt.judge.backend == "openai" else None
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
    judge = rlpt.judge.build(seed=rlpt.data.seed, cache_path=cache)
    return CandidateStage(window_fn=window, model=model[0], rollout=rollout, pool=c.pool_spec(), judge=judge,
                          decode=tokenizer.decode,
                          groups_per_step=rlpt.data.groups_per_step, staleness=c.staleness,
                          judge_timeout_s=rlpt.judge.verdict_timeout_s,
                          score_shape=(cfg.model.seq_length, cfg.train.micro_batch_size)
                          if rlpt.loss.reference == "rollout" else None, thinking=thinking)

