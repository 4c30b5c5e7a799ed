"""Scoring and reporting of ``rlpt eval`` (rlpt_plugin/megatron/eval/eval_job.py generates): the
prefix file, the judge's settings, the world oracle's and an OpenAI-protocol teacher's scores
per prefix and model, their summary and the printed table. Nothing here imports megatron.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from statistics import mean
from typing import Any, Mapping, Sequence

from rlpt_plugin.teacher.credentials import MissingKeyError, key_from_env

MODELS = ("trained", "base")
METRICS = (("safety", "safety"), ("factuality", "factuality"), ("quality_win_rate", "quality_win"))


class EvalError(ValueError):
    """A user mistake (missing checkpoint, bad prefix file, bad arguments): one line."""



@dataclass(frozen=True)
class Prefix:
    text: str
    reference: str | None  # the true continuation, when the prefix file has one
    record: Mapping[str, Any]


def read_prefixes(path: str | Path, field_name: str = "text",
                  reference_field: str = "reference") -> list[Prefix]:
    """JSON lines, one object per prefix: ``field_name`` (a non-empty string) and optionally
    ``reference_field`` (missing, null or empty: no reference)."""
    p = Path(path)
    if not p.is_file():
        raise EvalError(f"`--prefixes` file {str(p)!r} does not exist")
    out = []
    for number, line in enumerate(p.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise EvalError(f"{p}:{number}: not valid JSON ({err.msg})") from None
        text = record.get(field_name) if isinstance(record, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise EvalError(f"{p}:{number}: no non-empty string field {field_name!r} (set `--field`)")
        ref = record.get(reference_field)
        out.append(Prefix(text, ref if isinstance(ref, str) and ref.strip() else None, record))
    if not out:
        raise EvalError(f"`--prefixes` file {str(p)!r} holds no prefixes")
    return out


@dataclass(frozen=True)
class JudgeSpec:
    """Which judge scores the continuations, and its settings."""

    kind: str = "world"  # world | openai
    world_seed: int | None = None  # None: the recipe's rlpt.judge.world_seed
    world_entities: int | None = None  # None: the recipe's rlpt.judge.world_entities
    endpoints: tuple[str, ...] = ()
    model: str = ""
    endpoint_kind: str = "chat"
    concurrency: int = 32
    timeout_s: float = 120.0
    attempts: int = 4
    samples: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 4096
    cache: str | None = None
    api_key_env: str = ""  # NAME of the environment variable holding the key; never the key

    def api_key(self) -> str | None:
        try:
            return key_from_env(self.api_key_env, "--api-key-env")
        except MissingKeyError as err:
            raise EvalError(str(err)) from None

    def check(self) -> None:
        if self.kind not in ("world", "openai"):
            raise EvalError(f"`--judge` must be world or openai, but is {self.kind!r}")
        if self.kind == "openai" and (not self.endpoints or not self.model):
            raise EvalError("`--judge openai` needs at least one `--endpoint` and a `--model`")
        for name in ("concurrency", "attempts", "samples", "max_tokens"):  # before generating
            if getattr(self, name) < 1:
                raise EvalError(f"`--{name.replace('_', '-')}` must be >= 1, but is {getattr(self, name)}")
        if not (self.timeout_s > 0 and self.temperature >= 0 and 0 < self.top_p <= 1):
            raise EvalError("`--timeout` must be > 0, `--temperature` >= 0 and `--top-p` in (0, 1]")
        if self.kind == "openai" and self.samples > 1 and self.temperature == 0:
            raise EvalError(f"`--samples` is {self.samples} with `--temperature` 0: greedy requests are "
                            "identical; set --temperature > 0 (paper's small judge: 1.0, --top-p 0.6)")
        if self.kind == "openai":
            self.api_key()  # a missing variable is an error before anything is generated


# ---------------------------------------------------------------------------------------------
# Scoring (rank 0): per prefix and model, {"safety", "factuality", "quality_win"} (None: unjudged)
# ---------------------------------------------------------------------------------------------
Scores = dict[str, list[dict[str, float | None]]]


def score_world(prefixes: Sequence[Prefix], texts: Mapping[str, list[str]], seed: int,
                entities: int) -> Scores:
    from rlpt_plugin.world import WorldConfig, build_kb
    from rlpt_plugin.world.evaluate import score_items

    kb = build_kb(WorldConfig(seed=seed, num_entities=entities))
    base = texts["base"]
    items = [{"text": p.text, "reference": p.reference if p.reference is not None else b}
             for p, b in zip(prefixes, base)]
    scores = {name: score_items(items, texts[name], base, kb) for name in MODELS}
    for name in MODELS:  # identical texts: 0.5 by definition, whatever the oracle's tie rule
        for row, text, b in zip(scores[name], texts[name], base):
            row["quality_win"] = 0.5 if text == b else row["quality_win"]
    return scores


async def judge_openai(spec: JudgeSpec, prefixes: Sequence[Prefix], texts: Mapping[str, list[str]],
                        seed: int) -> tuple[Scores, dict[str, float]]:
    from rlpt_plugin.judge import Axis, Judge, JudgeConfig, JudgePool
    from rlpt_plugin.rl.pool import CandidateKind
    from rlpt_plugin.teacher.cache import ResponseCache
    from rlpt_plugin.teacher.openai_client import OpenAIClient
    from rlpt_plugin.teacher.protocol import SamplingParams

    client = OpenAIClient(list(spec.endpoints), spec.model, endpoint_kind=spec.endpoint_kind,  # type: ignore[arg-type]
                          api_key=spec.api_key(), max_concurrency=spec.concurrency, timeout_s=spec.timeout_s,
                          max_attempts=spec.attempts)
    cache = ResponseCache(spec.cache) if spec.cache else None
    params = SamplingParams(temperature=spec.temperature, top_p=spec.top_p, max_tokens=spec.max_tokens)
    judges = {axis: Judge(client, JudgeConfig(axes=(axis,), position="both", schedule="round_robin",
                                              samples_per_judgment=spec.samples, params=params, seed=seed),
                          cache=cache) for axis in (Axis.QUALITY, Axis.SAFETY, Axis.FACTUALITY)}
    trained, base = texts["trained"], texts["base"]
    two = (CandidateKind.ROLLOUT, CandidateKind.ROLLOUT)
    pools = {
        Axis.QUALITY: [JudgePool(p.text, None, (t, b), two) for p, t, b in zip(prefixes, trained, base)],
        Axis.SAFETY: [JudgePool(p.text, None, (t, b), two) for p, t, b in zip(prefixes, trained, base)],
        Axis.FACTUALITY: [JudgePool(p.text, b, (t,), two[:1]) if p.reference is None
                          else JudgePool(p.text, p.reference, (t, b), two)
                          for p, t, b in zip(prefixes, trained, base)],
    }
    try:
        verdicts = dict(zip(pools, await asyncio.gather(*(judges[a].judge(pools[a]) for a in pools))))
    finally:
        await client.aclose()
        if cache is not None:
            cache.close()

    def pick(axis: Axis, k: int, index: int) -> float | None:  # None: not asked, or failed
        got = verdicts[axis][k].per_axis.get(axis)
        return got[index] if got is not None and index < len(got) else None

    scores: Scores = {name: [] for name in MODELS}
    for k in range(len(prefixes)):
        quality = 0.5 if trained[k] == base[k] else pick(Axis.QUALITY, k, 0)  # P(trained beats base)
        for m, name in enumerate(MODELS):
            scores[name].append({"safety": pick(Axis.SAFETY, k, m), "factuality": pick(Axis.FACTUALITY, k, m),
                                 "quality_win": quality if name == "trained" else 0.5})
    metrics: dict[str, float] = {}
    for judge in judges.values():
        for key, value in judge.metrics().items():
            if key in ("calls", "cache_hits", "failed_judgments", "identical_pairs", "retries") or key.startswith("calls:"):
                metrics[key] = metrics.get(key, 0.0) + value
    return scores, metrics


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def summarize(rows: Sequence[Mapping[str, float | None]], prefixes: Sequence[Prefix] = ()) -> dict[str, Any]:
    """Mean of every metric over the prefixes it was judged on (None: judged on none). When the
    prefix records carry the world's ``systematic`` key, the same over the systematic and the
    ordinary prefixes too."""
    out: dict[str, Any] = {"count": len(rows), "judged": {}}
    for name, key in METRICS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[name] = mean(values) if values else None  # type: ignore[arg-type]
        out["judged"][name] = len(values)
    if prefixes and any("systematic" in p.record for p in prefixes):
        for part, wanted in (("systematic", True), ("ordinary", False)):
            out[part] = summarize([r for r, p in zip(rows, prefixes) if bool(p.record.get("systematic")) == wanted])
    return out


def format_table(report: Mapping[str, Any]) -> str:
    def cell(v: Any) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [f"rlpt eval: {len(report['prefixes'])} prefixes, {report['suffix_length']} tokens each, "
             f"judge {report['judge']}",
             f"{'model':<8} {'iteration':>9} {'safety':>8} {'factuality':>10} {'quality_win_rate':>16}"]
    for name in MODELS:
        s, it = report["summary"][name], report["checkpoints"][name]["iteration"]
        lines.append(f"{name:<8} {'?' if it is None else it:>9} {cell(s['safety']):>8} "
                     f"{cell(s['factuality']):>10} {cell(s['quality_win_rate']):>16}")
    return "\n".join(lines)
