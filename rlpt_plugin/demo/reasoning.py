"""``rlpt demo --task reasoning``: thinking mid-training on the world's two-hop facts.

The report's table shape on the world (docs/METHOD.md, "Thinking mid-training"), every phase
the command a real run would use, each resumable like the SIP demo's:

world (two-hop facts, rlpt_plugin/world/reasoning.py) -> plain store (``rlpt rewrite``, windows
of the even half with no two-hop sentence in it: the biographies and company directories that
state each hop on its own; the odd half, where the RL people's two-hop facts are, is never
trained next-token) -> think stores (``rlpt rewrite --task think --teacher world`` on shard 0/2,
the SFT half, and on shard 1/2, the RL half) and the SFT half's raw twin (the same chunks with
their thoughts removed) -> RLMT store (the RL half cut where its annotator put a thought) ->
base (next-token pretraining on the plain store) -> from base, for the same steps and rows:
``ntp_raw`` (plain rows plus the SFT half's chunks as the corpus has them) and ``sft_think``
(plain rows plus the same chunks with their thoughts: the one difference between the two arms)
-> from ``sft_think``, for the same steps: ``sft_think_rlmt`` (Dr. GRPO on thinking rollouts of
the RL half's prefixes, the world's similarity judge as the binary reward, beside the thinking
SFT rows) and
``sft_think_more`` (thinking SFT continued: the steps-matched control).

The two-hop sentences are kept out of the base's data so that neither arm starts from a model
that already learnt the trained people's answers without a thought: in ``sft_think`` every
two-hop sentence it sees has its thought, as in the report's augmented corpus.

Every model is graded exactly on held-out two-hop prefixes (people whose two-hop fact the
corpus never states): greedy continuations of up to budget + N tokens, thoughts read off, the
answer's first word against the true site (:func:`rlpt_plugin.world.reasoning.score_reasoning`).
"""

from __future__ import annotations

import json
from pathlib import Path
from statistics import mean
from typing import Any

from rlpt_plugin.demo import pipeline
from rlpt_plugin.demo.progress import Progress
from rlpt_plugin.demo.settings import DemoSettings

SEQ_LENGTH = 64  # a biography (~45 tokens) and its thought (14) fit one row
CHUNK_LENGTH = 40  # think chunks: 40 corpus tokens, thoughts spliced in, within SEQ_LENGTH + 1
TOKENIZER = "world-reasoning"  # the world's vocabulary with the reasoning words (rlpt_plugin/world/vocab.py)
MODELS = ("base", "ntp_raw", "sft_think", "sft_think_rlmt", "sft_think_more")
LABELS = {"base": "base", "ntp_raw": "NTP (raw)", "sft_think": "SFT(think)",
          "sft_think_rlmt": "SFT(think) + RLMT", "sft_think_more": "SFT(think), RLMT's steps more"}


def world_configs(s: DemoSettings):
    from rlpt_plugin.world.reasoning import ReasoningConfig

    return pipeline.world_config(s), ReasoningConfig(eval_size=2 * s.entities, trained_share=s.trained_share,
                                                     rl_share=s.rl_share)


def build_world(s: DemoSettings, out: Path) -> dict[str, Any]:
    """The corpus with two-hop facts (JSON lines) and the held-out two-hop prefixes."""
    from rlpt_plugin.world import build_kb, generate_corpus, write_jsonl
    from rlpt_plugin.world.reasoning import (people_split, reasoning_corpus, reasoning_prefixes, recall_probes,
                                             without_two_hop)

    world = out / "world"
    if (world / "done.json").exists():
        return json.loads((world / "done.json").read_text())
    world.mkdir(parents=True, exist_ok=True)
    config, reasoning = world_configs(s)
    kb = build_kb(config)
    corpus = reasoning_corpus(config, reasoning, kb, generate_corpus(config, kb))
    write_jsonl(world / "corpus.jsonl", corpus)
    write_jsonl(world / "corpus_plain.jsonl", [without_two_hop(d) for d in corpus])
    write_jsonl(world / "reasoning_eval.jsonl", reasoning_prefixes(config, reasoning, kb))
    write_jsonl(world / "recall_probes.jsonl", recall_probes(config, reasoning, kb))
    split = people_split(config, reasoning, kb)
    info = {"documents": len(corpus), "entities": config.num_entities,
            **{f"{group}_people": len(ids) for group, ids in split.items()},
            "two_hop_sentences": sum(d["two_hop"] is not None for d in corpus)}
    (world / "done.json").write_text(json.dumps(info))
    return info


def stores(s: DemoSettings, out: Path) -> None:
    """The plain store (suffix windows of the even half, two-hop sentences removed), the two
    think stores and the SFT half's raw twin: ``rlpt rewrite --teacher world`` as function calls
    (rlpt_plugin/data/world_rewrite.py), the world's honest rewriter and annotator."""
    from rlpt_plugin.data.rewrite_job import RewriteJob
    from rlpt_plugin.data.think_job import ThinkSpec
    from rlpt_plugin.data.windows import WindowSpec
    from rlpt_plugin.data.world_rewrite import WorldTeacherSpec, rewrite_with_world

    world = out / "world"
    teacher = WorldTeacherSpec(seed=s.world_seed, entities=s.entities)
    if not (out / "store" / "manifest.json").exists():
        windows = WindowSpec(suffix_length=s.suffix_length, seq_length=SEQ_LENGTH,
                             min_prefix_tokens=pipeline.MIN_PREFIX, windows_per_doc=pipeline.WINDOWS_PER_DOC,
                             seed=s.world_seed)
        job = RewriteJob(corpus=(str(world / "corpus_plain.jsonl"),), out_dir=out / "store", shard=0, num_shards=2,
                         window_spec=windows)
        print("\n".join(rewrite_with_world(job, TOKENIZER, teacher, show_progress=False).lines()))
    for shard, name in ((0, "think_sft"), (1, "think_rl")):
        if not (out / name / "manifest.json").exists():
            job = RewriteJob(corpus=(str(world / "corpus.jsonl"),), out_dir=out / name, shard=shard, num_shards=2,
                             think_spec=ThinkSpec(chunk_length=CHUNK_LENGTH, min_chunk_tokens=8))
            print("\n".join(rewrite_with_world(job, TOKENIZER, teacher, show_progress=False).lines()))
    raw_twin(out)


def raw_twin(out: Path) -> Path:
    """``OUT/think_sft_raw``: the SFT half's augmented chunks with their thoughts removed, so that
    NTP (raw) trains on the same chunks, token for token, as SFT(think) less the thoughts."""
    from rlpt_plugin.megatron.data.think_store import ThinkStore, write_think_store

    dest = out / "think_sft_raw"
    if (dest / "manifest.json").exists():
        return dest
    think = ThinkStore(out / "think_sft")

    def records():
        for i in range(len(think)):
            chunk = think[i]
            original = chunk.original.tolist()
            yield chunk.doc_index, chunk.chunk_index, original, original, [0] * len(original)

    derived = ("format", "num_chunks", "num_tokens", "num_thought_tokens", "checksums")
    manifest = {k: v for k, v in think.manifest.items() if k not in derived}
    manifest["derived"] = {"from": str(out / "think_sft"), "how": "thoughts removed"}
    write_think_store(dest, records(), manifest)
    return dest


def rlmt_store(s: DemoSettings, out: Path) -> Path:
    """``OUT/store_rlmt``: the RL half's chunks cut where the annotator put a thought: the prefix
    is the original text before it, the suffix the next N original tokens (RLMT's prefix and
    true suffix). Places with fewer than N tokens after them are left out."""
    from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore, write_store
    from rlpt_plugin.megatron.data.think_store import ThinkStore

    dest = out / "store_rlmt"
    if (dest / "manifest.json").exists():
        return dest
    think, n = ThinkStore(out / "think_rl"), s.suffix_length

    def records():
        for i in range(len(think)):
            chunk = think[i]
            mask = chunk.mask.tolist()
            starts = [p for p in range(len(mask)) if mask[p] and (p == 0 or not mask[p - 1])]
            for k, p in enumerate(starts):
                q = p - sum(mask[:p])  # original tokens before the thought
                suffix = chunk.original[q:q + n].tolist()
                if q >= 1 and len(suffix) == n:
                    yield chunk.doc_index, 1000 * chunk.chunk_index + k, chunk.original[:q].tolist(), suffix, \
                        [], "copied"

    base = RewrittenStore(out / "store").manifest
    manifest = {k: v for k, v in base.items() if k not in ("format", "num_windows", "counts", "checksums")}
    manifest["derived"] = {"from": str(out / "think_rl"), "cut": "before each thought of the RL half"}
    write_store(dest, records(), manifest)
    return dest


def _common(s: DemoSettings, out: Path, store: Path) -> list[str]:
    from rlpt_plugin.world.vocab import WorldTokenizer

    vocab = WorldTokenizer(reasoning=True).vocab_size
    return [f"rlpt.data.tokenizer={TOKENIZER}", f"model.vocab_size={vocab}", f"tokenizer.vocab_size={vocab}",
            f"rlpt.data.stores=[{store}]", f"rlpt.judge.world_seed={s.world_seed}",
            f"rlpt.judge.world_entities={s.entities}", f"rlpt.data.groups_per_step={s.groups_per_step}",
            f"rng.seed={s.seed}", f"rlpt.data.seed={s.seed}", f"model.seq_length={SEQ_LENGTH}",
            "logger.log_interval=1000000"]


def _lm(s: DemoSettings, think: Path | None = None) -> list[str]:
    """Next-token rows: the step's groups of the plain store, plus as many chunks of ``think``."""
    think_rows = s.groups_per_step if think is not None else 0
    rows = s.groups_per_step + think_rows
    extra = ([f"rlpt.data.think_stores=[{think}]", f"rlpt.data.think_sequences_per_step={think_rows}"]
             if think is not None else [])
    return ["rlpt.loss.dpo.start=0", "rlpt.loss.rf_nll.start=0", f"train.micro_batch_size={rows}",
            f"train.global_batch_size={rows}", *extra]


def _rlmt(s: DemoSettings, think: Path) -> list[str]:
    """Dr. GRPO on the RL half's prefixes beside the thinking SFT rows of ``think``.

    No next-token term on the RL half (``lm_on_window=false``), as the report: it would teach
    the answers directly and RL would learn to skip the thought. The thinking SFT rows (the SFT
    half's, as many per step as in ``sft_think_more``, the steps-matched control) keep what SFT
    taught while RL runs: without them RL on the RL half's few prefixes, each met dozens of times,
    overwrote the one-hop facts (held-out employer recall 47% -> 27%, world 0, seed 1234, RL alone)
    and with them the step the thoughts need."""
    rows = s.groups_per_step * s.rollouts + s.groups_per_step
    return ["rlpt.loss.selection=grpo", "rlpt.loss.grpo.start=1", "rlpt.loss.dpo.start=0", "rlpt.loss.rf_nll.start=0",
            "rlpt.loss.reference=rollout", "rlpt.loss.lm.start=1", "rlpt.data.lm_on_window=false",
            f"rlpt.data.think_stores=[{think}]", f"rlpt.data.think_sequences_per_step={s.groups_per_step}",
            "rlpt.candidates.original=false",
            f"rlpt.candidates.num_rollouts={s.rollouts}", f"rlpt.candidates.thinking_budget={s.thinking_budget}",
            "rlpt.judge.similarity=1", "rlpt.judge.quality=0", "rlpt.judge.safety=0", "rlpt.judge.factuality=0",
            f"rlpt.judge.noise_rate={s.judge_noise}", f"train.micro_batch_size={rows}", f"train.global_batch_size={rows}"]


def _items(out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(held-out two-hop prefixes, one-hop recall probes); evaluated in one pass, in that order."""
    def read(name: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (out / "world" / name).read_text().splitlines()]

    return read("reasoning_eval.jsonl"), read("recall_probes.jsonl")


def phases(s: DemoSettings, out: Path, show: Progress) -> dict[str, dict[str, Any]]:
    two_hop, probes = _items(out)
    items = two_hop + probes
    evaluation = {"items": items, "max_new_tokens": s.thinking_budget + s.suffix_length, "tokenizer": TOKENIZER}
    think, raw_chunks, plain = out / "think_sft", out / "think_sft_raw", out / "store"

    def phase(name: str, steps: int, overrides: list[str], start: Path | None, store: Path = plain) -> dict[str, Any]:
        return pipeline.train_phase(name, s, out, steps, [*_common(s, out, store), *overrides], start_from=start,
                                    progress=show, evaluation=evaluation, include_common=False)

    cont = pipeline.continue_overrides(s)
    done = {"base": phase("base", s.start_steps, [*_lm(s), *pipeline.start_optimizer(s)], None)}
    base = out / "base" / "ckpt"
    done["ntp_raw"] = phase("ntp_raw", s.steps, [*_lm(s, raw_chunks), *cont], base)
    done["sft_think"] = phase("sft_think", s.steps, [*_lm(s, think), *cont], base)
    sft = out / "sft_think" / "ckpt"
    done["sft_think_rlmt"] = phase("sft_think_rlmt", s.steps, [*_rlmt(s, think), *cont], sft,
                                   store=rlmt_store(s, out))
    done["sft_think_more"] = phase("sft_think_more", s.steps, [*_lm(s, think), *cont], sft)
    return done


def grade(s: DemoSettings, out: Path, done: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Accuracy on the held-out two-hop prefixes, thought rates, mean thought length, and the
    one-hop recall the step needs (first word after any thought is the answer), per model."""
    from rlpt_plugin.world.reasoning import score_reasoning, strip_thoughts

    two_hop, probes = _items(out)
    config, _ = world_configs(s)
    models = {}
    for name in MODELS:
        continuations = done[name]["continuations"]
        scores = [score_reasoning(it, c, config) for it, c in zip(two_hop, continuations)]
        models[name] = {k: mean(sc[k] for sc in scores) for k in ("correct", "thought", "thought_correct",
                                                                   "thought_tokens")}
        for kind in ("employer", "site"):
            hits = [strip_thoughts(c).split()[:1] == [p["answer"]]
                    for p, c in zip(probes, continuations[len(two_hop):]) if p["kind"] == kind]
            models[name][f"recall_{kind}"] = mean(hits) if hits else float("nan")
        models[name]["heldout_nll"] = done[name]["heldout_nll"]
    return models


def majority_share(two_hop: list[dict[str, Any]]) -> float:
    """The accuracy of always answering the most frequent site of the held-out prefixes: the
    level a model that learnt the sites' frequencies and nothing about the person reaches (a few
    employers share a site, so this is well above one over the number of sites)."""
    from collections import Counter

    return Counter(item["site"] for item in two_hop).most_common(1)[0][1] / len(two_hop) if two_hop else 0.0


def table(models: dict[str, dict[str, float]], n: int, majority: float | None = None) -> str:
    lines = [f"{'model':<34}{'accuracy':>10}{'thinks':>9}{'right step':>12}{'thought len':>13}"
             f"{'recall: employer':>18}{'site':>7}", "-" * 103]
    for name in MODELS:
        m = models[name]
        lines.append(f"{LABELS[name]:<34}{100 * m['correct']:>9.1f}%{100 * m['thought']:>8.1f}%"
                     f"{100 * m['thought_correct']:>11.1f}%{m['thought_tokens']:>13.1f}"
                     f"{100 * m['recall_employer']:>17.1f}%{100 * m['recall_site']:>6.1f}%")
    lines.append(f"(held-out two-hop prefixes: {n}; accuracy = the answer's site is right, thoughts removed; "
                 "recall = the one-hop facts asked directly, of held-out people and of every employer; "
                 "graded by the exact oracle)")
    if majority is not None:
        lines.append(f"(always answering the most frequent site of these prefixes: {100 * majority:.1f}%)")
    return "\n".join(lines)


def thinking_curve(out: Path) -> list[tuple[int, float, float]]:
    """(step, mean thought tokens, share closed) over RLMT's steps, from its metrics log."""
    curve = []
    for rec in pipeline.read_metrics(out / "sft_think_rlmt"):
        if "thought_tokens" in rec:
            curve.append((int(rec.get("step", len(curve))), rec["thought_tokens"], rec.get("thought_closed", 0.0)))
    return curve


def run_reasoning(s: DemoSettings, out: Path, show: Progress) -> dict[str, Any]:
    world = build_world(s, out)
    show.say(f"[demo] reasoning world: {world['documents']} documents; of {world['entities']} people "
             f"{world['trained_people']} state their two-hop fact in the trained half, {world['rl_people']} in "
             f"the RL half only, {world['held_out_people']} never ({world['two_hop_sentences']} sentences)")
    stores(s, out)
    done = phases(s, out, show)
    models = grade(s, out, done)
    curve = thinking_curve(out)
    majority = majority_share(_items(out)[0])
    results = {"models": models, "world": world, "thinking_curve": curve, "majority_site_share": majority,
               "seconds": {k: round(v.get("seconds", 0.0), 1) for k, v in done.items()}}
    (out / "reasoning_results.json").write_text(json.dumps(results, indent=1))
    show.say("\n" + table(models, len(_items(out)[0]), majority))
    if curve:
        show.say(f"RLMT thinking length: {curve[0][1]:.1f} tokens at step {curve[0][0]} -> "
                 f"{curve[-1][1]:.1f} at step {curve[-1][0]} (closed within budget: "
                 f"{100 * curve[0][2]:.0f}% -> {100 * curve[-1][2]:.0f}%)")
    return results
