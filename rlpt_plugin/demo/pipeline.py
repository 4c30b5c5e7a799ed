"""The demo's phases, each the command a real run would use, each resumable.

world -> rewrite (``rlpt rewrite --teacher world``) -> start (next-token pretraining) ->
baseline (next-token continuation) and sip (self-improving continuation, from the same start
checkpoint, for the same steps) [-> rf_nll] -> evaluation with the oracle -> report.

Every training phase is the world recipe through Megatron-Bridge's ``pretrain()`` with Hydra
overrides, checkpointing into ``OUT/<phase>/ckpt``; the continuations load the start model with
Bridge's ``checkpoint.pretrained_checkpoint``. A phase whose ``eval.json`` exists is done and
skipped; a phase killed half-way resumes from its last checkpoint (Bridge's own resume).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from rlpt_plugin.demo.progress import Progress, phase_output
from rlpt_plugin.demo.settings import DemoSettings

RECIPE = "rlpt_plugin.recipes.world:world_config"
SEQ_LENGTH = 32  # documents are ~40 tokens: most prefixes fill the context (equal lengths share prefill)
MIN_PREFIX = 4
WINDOWS_PER_DOC = 4


def limit_threads(s: DemoSettings) -> None:
    """``--threads``: torch's intra-op threads here and in any process started from here."""
    if s.threads > 0:
        import os

        import torch

        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(s.threads)
        torch.set_num_threads(s.threads)


def world_config(s: DemoSettings):
    from rlpt_plugin.world import WorldConfig

    r = s.defect_rate
    return WorldConfig(seed=s.world_seed, num_entities=s.entities, docs_per_entity=s.docs_per_entity,
                       false_rate=r, unsafe_rate=r, degenerate_rate=r,
                       systematic_fraction=s.systematic_fraction, eval_size=2 * s.entities)


def build_world(s: DemoSettings, out: Path) -> dict[str, Any]:
    """The raw corpus (JSON lines) and the held-out prefixes."""
    from rlpt_plugin.world import build_kb, eval_prefixes, generate_corpus, systematic_contexts, write_jsonl

    world = out / "world"
    if (world / "done.json").exists():
        return json.loads((world / "done.json").read_text())
    world.mkdir(parents=True, exist_ok=True)
    config = world_config(s)
    kb = build_kb(config)
    corpus = generate_corpus(config, kb)
    write_jsonl(world / "corpus.jsonl", corpus)
    write_jsonl(world / "eval.jsonl", eval_prefixes(config, kb, corpus))
    info = {"documents": len(corpus), "entities": config.num_entities,
            "systematic_contexts": len(systematic_contexts(config, kb)),
            "defective_sentences": sum(len(d["defects"]) for d in corpus)}
    (world / "done.json").write_text(json.dumps(info))
    return info


def rewrite(s: DemoSettings, out: Path) -> None:
    """``rlpt rewrite --teacher world`` of the raw corpus into ``OUT/store``, as a function call
    (rlpt_plugin/data/world_rewrite.py): the honest oracle rewriter of the demo's settings."""
    from rlpt_plugin.data.rewrite_job import RewriteJob
    from rlpt_plugin.data.windows import WindowSpec
    from rlpt_plugin.data.world_rewrite import WorldTeacherSpec, rewrite_with_world

    if (out / "store" / "manifest.json").exists():
        return
    job = RewriteJob(corpus=(str(out / "world" / "corpus.jsonl"),), out_dir=out / "store",
                     window_spec=WindowSpec(suffix_length=s.suffix_length, seq_length=SEQ_LENGTH,
                                            min_prefix_tokens=MIN_PREFIX, windows_per_doc=WINDOWS_PER_DOC,
                                            seed=s.world_seed))
    teacher = WorldTeacherSpec(seed=s.world_seed, entities=s.entities, knowledge=s.teacher_knowledge,
                               rewrite_miss=s.rewrite_miss, rewrite_error=s.rewrite_error)
    print("\n".join(rewrite_with_world(job, "world", teacher).lines()))


def common_overrides(s: DemoSettings, out: Path) -> list[str]:
    return [f"rlpt.data.stores=[{out / 'store'}]", f"rlpt.judge.world_seed={s.world_seed}",
            f"rlpt.judge.world_entities={s.entities}", f"rlpt.data.groups_per_step={s.groups_per_step}",
            f"train.micro_batch_size={s.groups_per_step}", f"rng.seed={s.seed}", f"rlpt.data.seed={s.seed}",
            f"model.seq_length={SEQ_LENGTH}", "logger.log_interval=1000000"]


def start_overrides(s: DemoSettings) -> list[str]:
    return [*lm_overrides(s), *start_optimizer(s)]


def start_optimizer(s: DemoSettings) -> list[str]:
    """The start model's optimizer: a cosine decay to a tenth after 30 warm-up steps."""
    return [f"optimizer.lr={s.start_lr}", f"optimizer.min_lr={s.start_lr / 10}",
            "scheduler.lr_decay_style=cosine", "scheduler.lr_warmup_iters=30"]


def continue_overrides(s: DemoSettings) -> list[str]:
    """The optimizer of every continuation (baseline and SIP alike)."""
    return [f"optimizer.lr={s.lr}", f"optimizer.min_lr={s.lr}", "scheduler.lr_decay_style=constant",
            "scheduler.lr_warmup_iters=20"]


def lm_overrides(s: DemoSettings) -> list[str]:
    """Plain next-token training on the store's windows (no candidates, no judge)."""
    return ["rlpt.loss.dpo.start=0", "rlpt.loss.rf_nll.start=0",
            f"train.global_batch_size={s.groups_per_step}"]


def _one_micro_batch(rows: int) -> list[str]:
    """Room for every row of a step in one micro-batch: DPO pairs never split across
    micro-batches, so a step of G pools needs up to 3G rows (LM, chosen, rejected)."""
    return [f"train.micro_batch_size={rows}", f"train.global_batch_size={rows}"]


def sip_overrides(s: DemoSettings, rule: str) -> list[str]:
    """Self-improving continuation: K rollouts (+ the original suffix), the oracle judge's reward
    over the chosen axes, online DPO (+ NLL on the chosen) or RF-NLL."""
    if rule == "dpo":
        loss = ["rlpt.loss.selection=dpo", "rlpt.loss.dpo.start=1", f"rlpt.loss.rf_nll.start={s.chosen_nll}",
                f"rlpt.loss.beta={s.beta}", f"rlpt.loss.reference={s.reference}",
                *_one_micro_batch(3 * s.groups_per_step)]
    elif rule == "grpo":  # against the policy that sampled the pool (the ratio's denominator)
        loss = ["rlpt.loss.selection=grpo", "rlpt.loss.dpo.start=0", "rlpt.loss.rf_nll.start=0",
                "rlpt.loss.grpo.start=1", "rlpt.loss.reference=rollout",
                *_one_micro_batch((s.rollouts + 1) * s.groups_per_step)]
    else:
        loss = ["rlpt.loss.selection=rf_nll", "rlpt.loss.dpo.start=0", "rlpt.loss.rf_nll.start=1",
                *_one_micro_batch(2 * s.groups_per_step)]
    axes = s.reward_axes()
    reward = [f"rlpt.judge.{a}={1.0 if a in axes else 0.0}" for a in ("quality", "safety", "factuality")]
    return [*loss, *continue_overrides(s), *reward, f"rlpt.loss.lm.start={s.lm_weight}",
            f"rlpt.candidates.num_rollouts={s.rollouts}", f"rlpt.candidates.original={not s.rollouts_only}",
            f"rlpt.candidates.rewrite={s.rewrite and not s.rollouts_only}",
            f"rlpt.judge.noise_rate={s.judge_noise}", f"rlpt.judge.world_knowledge={s.teacher_knowledge}"]


def pool_size(s: DemoSettings) -> int:
    """Candidates in a full SIP pool: K rollouts + the original (+ the rewrite)."""
    return s.rollouts + (0 if s.rollouts_only else 1 + int(s.rewrite))


def chance_rollout_rate(s: DemoSettings) -> float:
    """The rollout-chosen rate of a judge that cannot tell candidates apart but must pick one
    (the chosen drawn uniformly from the pool): K / pool size. With an exact judge equally good
    candidates tie and the corpus text wins ties (pool order), so equally good rollouts are
    chosen LESS often than this; a rate above it means the judge prefers the model's own text."""
    return s.rollouts / pool_size(s)


def sft_store(out: Path) -> Path:
    """``OUT/store_sft``: the store's windows with the teacher's rewrite as the suffix (where it
    gave a usable one of full length; elsewhere the original): next-token training on it is the
    paper's "SFT on rewrites" control, on exactly the prefixes the other runs see."""
    from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore, write_store

    dest = out / "store_sft"
    if (dest / "manifest.json").exists():
        return dest
    store = RewrittenStore(out / "store")
    n = int(store.manifest["suffix_length"])

    def records():
        for i in range(len(store)):
            w = store[i]
            suffix = w.rewrite if w.rewrite is not None and len(w.rewrite) == n else w.original
            yield w.doc_index, w.window_index, w.prefix.tolist(), suffix.tolist(), suffix.tolist(), "copied"

    manifest = {k: v for k, v in store.manifest.items() if k not in ("format", "num_windows", "counts", "checksums")}
    manifest["derived"] = {"from": str(out / "store"), "suffix": "rewrite (original where none of length N)"}
    write_store(dest, records(), manifest)
    return dest


def control_phases(s: DemoSettings, out: Path, ckpt: Path, progress: Progress) -> dict[str, dict[str, Any]]:
    """The controls, from the start model: next-token for ``control_factor`` x the steps
    (SIP's tokens trained) and next-token on the rewrites for the same steps as SIP."""
    phases = {"baseline_compute": train_phase(
        "baseline_compute", s, out, s.control_factor * s.steps, lm_overrides(s) + continue_overrides(s),
        start_from=ckpt, progress=progress)}
    store = sft_store(out)
    phases["sft_rewrites"] = train_phase("sft_rewrites", s, out, s.steps, lm_overrides(s) + continue_overrides(s)
                                         + [f"rlpt.data.stores=[{store}]"], start_from=ckpt, progress=progress)
    return phases


def train_phase(name: str, s: DemoSettings, out: Path, steps: int, overrides: list[str], *,
                start_from: Path | None, progress: Progress, evaluation: dict[str, Any] | None = None,
                include_common: bool = True) -> dict[str, Any]:
    """One training phase through the real host; returns its evaluation (greedy continuations
    of the held-out prefixes and held-out NLL) and timings. Skipped when already done.

    ``evaluation``: ``{"items": [{"text", "reference"}...], "max_new_tokens": n, "tokenizer": name}``
    instead of the world's held-out prefixes, N tokens and the world's tokenizer; ``include_common=False``: ``overrides`` name the
    stores, seeds and sequence length themselves."""
    phase = out / name
    done = phase / "eval.json"
    if done.exists():
        progress.skip(name)
        return json.loads(done.read_text())
    with phase_output(phase / "log.txt"):  # megatron's import-time warnings go to the log too
        from rlpt_plugin.megatron.host import launch
        from rlpt_plugin.megatron.eval.evaluate import ContinuationEval
        from rlpt_plugin.megatron.host.progress import StepTimer
        from rlpt_plugin.data.tokenizer import load_tokenizer
        from rlpt_plugin.world.vocab import WorldTokenizer

    if evaluation is None:
        evaluation = {"items": [json.loads(line) for line in (out / "world" / "eval.jsonl").read_text().splitlines()],
                      "max_new_tokens": s.suffix_length}
    items = evaluation["items"]
    tokenizer = load_tokenizer(evaluation["tokenizer"]) if "tokenizer" in evaluation else WorldTokenizer()
    evaluator = ContinuationEval(tokenizer, [it["text"] for it in items],
                                 [f"{it['text']} {it['reference']}" for it in items],
                                 max_new_tokens=evaluation["max_new_tokens"], out_path=phase / "eval.tmp.json")
    timer = StepTimer()
    args = [*(common_overrides(s, out) if include_common else []), f"train.train_iters={steps}",
            f"checkpoint.save_interval={max(1, steps // 4)}", *overrides]
    if start_from is not None:
        args.append(f"checkpoint.pretrained_checkpoint={start_from}")
    began = time.perf_counter()
    with progress.phase(name, steps) as bar, phase_output(phase / "log.txt"):
        launch.train(RECIPE, phase, args, extra_callbacks=[timer, bar, evaluator])
    if evaluator.result is None:  # pretrain() left through an exit condition before its end
        raise RuntimeError(f"phase {name} stopped before training ended (see {phase / 'log.txt'}); "
                           "run the demo again with the same --out to resume it")
    result = dict(evaluator.result)
    result.update(seconds=time.perf_counter() - began, step_timing=timer.summary())
    done.write_text(json.dumps(result))
    with contextlib.suppress(FileNotFoundError):
        (phase / "eval.tmp.json").unlink()
    return result


def judge_models(s: DemoSettings, out: Path, phases: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The oracle's verdicts on every model's continuations (quality against the start model)."""
    from rlpt_plugin.world import build_kb
    from rlpt_plugin.world.documents import myth_values
    from rlpt_plugin.world.evaluate import score_items, summarize, target_claims

    items = [json.loads(line) for line in (out / "world" / "eval.jsonl").read_text().splitlines()]
    config = world_config(s)
    kb = build_kb(config)
    myths = myth_values(config, kb)
    base = phases["start"]["continuations"]
    models = {}
    for name, phase in phases.items():
        result = summarize(items, score_items(items, phase["continuations"], base, kb))
        result["heldout_nll"] = phase["heldout_nll"]
        result["target_claims"] = target_claims(items, phase["continuations"], kb, myths)
        models[name] = result
    return models


def read_metrics(phase: Path) -> list[dict[str, float]]:
    path = phase / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
