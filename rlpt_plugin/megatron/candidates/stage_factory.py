"""Builds the in-loop candidate stage from a job config (``rlpt.data.source=store``).

Windows come from rewritten stores through the Megatron dataset (rlpt_plugin/megatron/
suffix_dataset.py, deterministic in the seed); rollouts from the live policy; verdicts from the
teacher judge behind OpenAI-protocol endpoints, with a verdict cache that survives restarts
(``rlpt.judge.backend: openai``), or from the synthetic world's exact oracle judge (``world``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from rlpt_plugin.config import ConfigError, RLPTConfig
from rlpt_plugin.config_judge import JudgeSection
from rlpt_plugin.data.tokenizer import load_tokenizer
from rlpt_plugin.judge.judge import Judge
from rlpt_plugin.judge.pools import JudgeConfig, JudgePool, Verdicts
from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.candidates.candidate_stage import FAILURE_REASONS, CandidateStage
from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore
from rlpt_plugin.megatron.candidates.rollout import RolloutSpec
from rlpt_plugin.megatron.data.suffix_dataset import SuffixDatasetConfig, build_suffix_datasets
from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group
from rlpt_plugin.rl.pool import CandidateGroup
from rlpt_plugin.rl.thinking import ThinkingSpec
from rlpt_plugin.teacher.cache import ResponseCache
from rlpt_plugin.teacher.openai_client import OpenAIClient
from rlpt_plugin.teacher.protocol import SamplingParams


class JudgeAdapter:
    """Adapts :class:`Judge` to the stage's protocol."""

    def __init__(self, judge: Judge):
        self.inner = judge
        self.axes = tuple(str(a.value if hasattr(a, "value") else a) for a in judge.config.axes)

    async def judge(self, pools: Sequence[JudgePool]) -> Verdicts:
        out = await self.inner.judge(pools)
        per_axis = [{str(a.value if hasattr(a, "value") else a): list(v) for a, v in p.per_axis.items()}
                    for p in out]
        return Verdicts(scores=[p.scores for p in out], per_axis=per_axis, calls=[p.calls for p in out],
                        failures=[p.failures for p in out], errors=[p.errors for p in out],
                        cache_hit_rate=self.inner.metrics()["cache_hit_rate"],
                        reasons={k: float(sum(p.reasons.get(k, 0) for p in out)) for k in FAILURE_REASONS})

    async def aclose(self) -> None:
        """The HTTP client (on the loop it ran on), then the verdict cache."""
        try:
            await self.inner.aclose()
        finally:
            if self.inner.cache is not None:
                self.inner.cache.close()


def api_key(judge: JudgeSection) -> str | None:
    """The endpoints' key from the environment variable the config names (never the config)."""
    if not judge.api_key_env:
        return None
    key = os.environ.get(judge.api_key_env)
    if not key:
        raise ConfigError([f"`rlpt.judge.api_key_env` names the environment variable "
                           f"{judge.api_key_env!r}, which is not set (or empty) in this process."])
    return key


def judge_from_config(rlpt: RLPTConfig, cache_path: Path | None) -> Judge:
    j = rlpt.judge
    weights = j.axis_weights()
    client = OpenAIClient(j.endpoints, j.model, api_key=api_key(j), endpoint_kind=j.endpoint_kind,
                          max_concurrency=j.concurrency, timeout_s=j.request_timeout_s,
                          max_attempts=j.max_attempts)
    cache = ResponseCache(str(cache_path)) if cache_path is not None else None
    params = SamplingParams(temperature=j.temperature, top_p=j.top_p, max_tokens=j.max_tokens)
    return Judge(client, JudgeConfig(axes=tuple(weights), weights=weights, schedule=j.schedule,
                                     position=j.position, samples_per_judgment=j.samples, params=params,
                                     fallback=j.fallback, seed=rlpt.data.seed,
                                     structured_output=j.structured_output), cache=cache)


def world_judge_from_config(rlpt: RLPTConfig) -> Any:
    """The synthetic world's oracle judge (``rlpt.judge.backend: world``); already a PoolJudge."""
    from rlpt_plugin.world import WorldConfig, build_kb
    from rlpt_plugin.world.teacher import OracleJudge

    j = rlpt.judge
    weights = j.axis_weights()
    return OracleJudge(build_kb(WorldConfig(seed=j.world_seed, num_entities=j.world_entities)),
                       axes=tuple(weights), weights=weights, schedule=j.schedule,
                       noise_rate=j.noise_rate, seed=rlpt.data.seed,
                       knowledge=j.world_knowledge, knowledge_seed=j.world_seed)


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
    thinking = thinking_spec(c, tokenizer, suffix_length)
    rollout = RolloutSpec(num_samples=max(1, c.num_rollouts),
                          max_new_tokens=suffix_length if thinking is None else thinking.max_new_tokens,
                          vocab_size=tokenizer.vocab_size, temperature=c.temperature, top_p=c.top_p,
                          eos_id=tokenizer.eod_id, seed=rlpt.data.seed, share_prefill=c.share_prefill,
                          length_buckets=c.length_buckets)
    if rlpt.judge.backend == "world":
        judge: Any = world_judge_from_config(rlpt)
    else:
        cache = judge_cache_path(rlpt, getattr(cfg.checkpoint, "save", None))
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
        judge = JudgeAdapter(judge_from_config(rlpt, cache))
    return CandidateStage(window_fn=window, model=model[0], rollout=rollout,
                          pool=PoolSpec(original=c.original, rewrite=c.rewrite,
                                        rollouts=c.rollouts and c.num_rollouts > 0),
                          judge=judge, decode=tokenizer.decode,
                          groups_per_step=rlpt.data.groups_per_step, staleness=c.staleness,
                          judge_timeout_s=rlpt.judge.verdict_timeout_s,
                          score_shape=(cfg.model.seq_length, cfg.train.micro_batch_size)
                          if rlpt.loss.reference == "rollout" else None, thinking=thinking)


def thinking_spec(c: Any, tokenizer: Any, suffix_length: int) -> ThinkingSpec | None:
    """The thinking rollouts of ``rlpt.candidates`` (None when its thinking_budget is 0)."""
    if not c.thinking_budget:
        return None
    try:
        return ThinkingSpec(open_ids=tuple(tokenizer.encode(c.think_open)),
                            close_ids=tuple(tokenizer.encode(c.think_close)),
                            budget=c.thinking_budget, answer_length=suffix_length)
    except ValueError as err:
        raise ConfigError([f"`rlpt.candidates.thinking_budget` / think_open / think_close: {err} "
                           f"(tokenizer {getattr(tokenizer, 'name', tokenizer)!r})"]) from None
