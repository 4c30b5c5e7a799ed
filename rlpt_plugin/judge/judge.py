"""The judge: scores every candidate of every pool with a teacher LLM, asynchronously.

``await Judge(client, config, cache=cache).judge(pools)`` takes pools of
``(prefix_text, reference_text | None, candidate_texts, kinds)`` and returns one
:class:`PoolVerdict` per pool, in input order. All pools are judged concurrently; inside a pool
the pointwise axes (safety, factuality, similarity) send all their requests at once and the quality axis
sends each round of its pairing schedule at once (later rounds may depend on earlier outcomes).
The client bounds concurrency (``OpenAIClient(max_concurrency=...)``).

Requests. Each axis renders its own versioned template (``rlpt_plugin/teacher/prompts``). A
judgment is asked ``samples_per_judgment`` times with seeds ``base + s`` (``base`` =
``params.seed``, or ``config.seed`` when that is None) and its score is the mean over the
samples. With a ``ResponseCache`` the client is wrapped in one ``CachedClient`` per axis (the key
holds the model, the template version, the sampling params with the seed, and the full prompt),
so a rerun or restart reuses every answer and costs no server call.

Position bias (quality). ``position="random"``: each comparison is shown once, in an order drawn
from a hash of (seed, prefix, the two texts), i.e. reproducible and independent of the
candidates' indices, so a reshuffled pool hits the cache. ``position="both"``: shown in both
orders, each order counts as half a comparison (consistent answers give 1 / 0, inconsistent ones
0.5 to each); this doubles the calls. Two candidates with identical text are not sent to the
judge: their outcome is 0.5 (counted as ``identical_pairs``). Pointwise axes ask about each
distinct text of a pool once (a copy gets its verdict: ``identical_candidates``).

Failures. A failed HTTP result (after the client's own retries) or an answer the strict parser
rejects is retried up to ``max_attempts`` times per sample, each retry with a fresh seed
(``base + attempt * samples + s``) and, when ``retry_temperature`` is set, a temperature of at
least that (a greedy judge would otherwise repeat the same bad answer). Nothing unparsable is
ever scored. A judgment whose sample still fails after the last attempt fails, and with it the
pool: ``failed=True``, ``scores=None`` and ``fallback`` per config: ``"drop"`` (no RL term for
the prefix) or ``"nll_original"`` (train NLL on the original suffix; needs a reference, else
the pool falls back to ``"drop"``, counted as ``fallback_nll_unavailable``). Every retry,
failure and fallback is counted in :meth:`Judge.metrics`.

Structured output (``structured_output``, see :mod:`rlpt_plugin.judge.structured`). ``off``:
free-text answers read by the strict text parsers (:mod:`rlpt_plugin.judge.parsing`).
``json_schema`` / ``json_object`` / ``grammar``: every request carries its axis's schema in that
form and the answer must be the schema's JSON object exactly (``parse_json_verdict``); use it
when the server is known to support the form. ``auto``: ``json_schema`` first; when the server
rejects the field (HTTP 400 / 422 / 500 naming it) or ignores it (the answer is not a JSON object,
which a constrained decoder cannot produce), the next form (``json_object`` on chat routes,
``grammar`` on completions routes), then ``off``, for the rest of the judge's life (each step
logged and counted as ``structured_output_downgrades``; the request is resent at once and costs
no attempt). Once ``auto`` is down to ``off``, answers are read by the strict text parser. The format is part of the sampling params and so of
the cache key.

Reasoning judges. The verdict is read from the answer only (``message.content``; the client
keeps a reasoning model's ``reasoning_content`` apart). An empty answer that stopped on the token
budget (``finish_reason == "length"``) was cut off while reasoning: a failed attempt counted as
``parse_failure:answer cut off while reasoning: raise rlpt.judge.max_tokens`` and
``reasoning_cutoffs``.

Reward. ``scores[i] = sum(weights[axis] * per_axis[axis][i])`` over the enabled axes;
``per_axis`` keeps each axis separately (values in [0, 1]).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlpt_plugin.judge.axes import AXES, DEFAULT_TEMPLATES, WITH_REFERENCE, Axis, combine, mean, parse_axis
from rlpt_plugin.judge.parsing import ParseError, parse_factuality, parse_quality, parse_safety, parse_similarity
from rlpt_plugin.judge.schedules import SCHEDULES, make_schedule
from rlpt_plugin.judge.structured import MODES, parse_json_verdict, structured_output
from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind, original_index
from rlpt_plugin.teacher.cache import CachedClient, ResponseCache
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams, TeacherClient, check_results
from rlpt_plugin.teacher.templates import RenderedPrompt, Template, load_template

FALLBACK_DROP = "drop"
FALLBACK_NLL_ORIGINAL = "nll_original"
FALLBACKS: tuple[str, ...] = (FALLBACK_DROP, FALLBACK_NLL_ORIGINAL)
POSITIONS: tuple[str, ...] = ("random", "both")
CUT_OFF_WHILE_REASONING = "answer cut off while reasoning: raise rlpt.judge.max_tokens"
_log = logging.getLogger(__name__)

# The placeholders each axis fills; a template for the axis must declare exactly these.
AXIS_PLACEHOLDERS: dict[Axis, frozenset[str]] = {
    Axis.SAFETY: frozenset({"candidate"}),
    Axis.FACTUALITY: frozenset({"prefix", "reference", "candidate"}),
    Axis.QUALITY: frozenset({"prefix", "candidate_a", "candidate_b"}),
    Axis.SIMILARITY: frozenset({"prefix", "reference", "candidate"}),
}


@dataclass(frozen=True)
class JudgeConfig:
    """How to judge. Defaults: quality only, round robin (the paper), one greedy sample.

    ``weights`` needs an entry for every enabled axis. The paper's small-judge setting is
    ``samples_per_judgment=5, params=SamplingParams(temperature=1.0, top_p=0.6, ...)``.
    """

    axes: tuple[str, ...] = (Axis.QUALITY,)
    weights: Mapping[str, float] = field(default_factory=lambda: {a: 1.0 for a in AXES})
    schedule: str = "round_robin"
    position: str = "random"
    samples_per_judgment: int = 1
    params: SamplingParams = SamplingParams(temperature=0.0, top_p=1.0, max_tokens=512)
    max_attempts: int = 3
    retry_temperature: float | None = 0.7
    fallback: str = FALLBACK_DROP
    seed: int = 0
    templates: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_TEMPLATES))
    template_dir: str | None = None
    structured_output: str = "off"


    def __post_init__(self) -> None:
        if isinstance(self.axes, str):
            raise ValueError(f"axes must be a sequence of axis names, got the string {self.axes!r}")
        axes = tuple(parse_axis(a) for a in self.axes)
        if not axes or len(set(axes)) != len(axes):
            raise ValueError(f"axes must be non-empty and without repeats, got {list(self.axes)}")
        weights = {parse_axis(k): float(v) for k, v in self.weights.items()}
        for a in axes:
            if a not in weights or not math.isfinite(weights[a]):
                raise ValueError(f"weights must give a finite weight for axis {a.value!r}, got {dict(self.weights)}")
        templates = {parse_axis(k): v for k, v in self.templates.items()}
        for a in axes:
            if a not in templates:
                raise ValueError(f"templates must name a template for axis {a.value!r}, got {dict(self.templates)}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}")
        if self.position not in POSITIONS:
            raise ValueError(f"position must be one of {list(POSITIONS)}, got {self.position!r}")
        for name in ("samples_per_judgment", "max_attempts"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an int >= 1, got {v!r}")
        if not isinstance(self.params, SamplingParams):
            raise ValueError(f"params must be a SamplingParams, got {type(self.params).__name__}")
        if self.retry_temperature is not None and not (0.0 <= float(self.retry_temperature) < math.inf):
            raise ValueError(f"retry_temperature must be None or a finite float >= 0, got {self.retry_temperature!r}")
        if self.structured_output not in MODES:
            raise ValueError(f"structured_output must be one of {list(MODES)}, got {self.structured_output!r}")
        if self.params.structured is not None:
            raise ValueError("params.structured must be None: the judge sets each axis's format from "
                             "structured_output")
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be one of {list(FALLBACKS)}, got {self.fallback!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be an int >= 0, got {self.seed!r}")
        object.__setattr__(self, "axes", axes)
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "templates", templates)


@dataclass(frozen=True)
class JudgePool:
    """One prefix and its candidate texts; ``reference`` is the original suffix (or None)."""

    prefix: str
    reference: str | None
    candidates: tuple[str, ...]
    kinds: tuple[CandidateKind, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, str):
            raise ValueError(f"prefix must be a string, got {type(self.prefix).__name__}")
        if self.reference is not None and not isinstance(self.reference, str):
            raise ValueError(f"reference must be a string or None, got {type(self.reference).__name__}")
        if isinstance(self.candidates, str):
            raise ValueError("candidates must be a sequence of strings, got a string")
        cands = tuple(self.candidates)
        if not cands:
            raise ValueError("candidates must be non-empty, got 0 candidates")
        for i, c in enumerate(cands):
            if not isinstance(c, str):
                raise ValueError(f"candidates[{i}] must be a string, got {type(c).__name__}")
        kinds = tuple(CandidateKind(k) for k in self.kinds)
        if len(kinds) != len(cands):
            raise ValueError(f"len(kinds) must equal len(candidates)={len(cands)}, got {len(kinds)}")
        if kinds.count(CandidateKind.ORIGINAL) > 1:
            raise ValueError(f"kinds may hold at most one 'original', got {kinds.count(CandidateKind.ORIGINAL)}")
        object.__setattr__(self, "candidates", cands)
        object.__setattr__(self, "kinds", kinds)

    @classmethod
    def coerce(cls, value: JudgePool | Sequence[Any]) -> JudgePool:
        """A JudgePool as is, or one built from a 4-tuple ``(prefix, reference, candidates, kinds)``."""
        if isinstance(value, JudgePool):
            return value
        if isinstance(value, str) or len(value) != 4:
            raise ValueError("a pool must be a JudgePool or (prefix, reference, candidates, kinds)")
        return cls(value[0], value[1], tuple(value[2]), tuple(value[3]))

    @property
    def original_index(self) -> int | None:
        return original_index(self.kinds)


@dataclass(frozen=True)
class PoolVerdict:
    """The judge's verdict on one pool.

    ``scores``: reward per candidate (None when the pool failed). ``per_axis``: axis -> score
    per candidate, for the axes that succeeded. ``calls``: judge requests for this pool
    (retries and cache hits included). ``failures``: attempts that failed (HTTP or parse).
    ``comparisons``: quality comparisons decided by the schedule. ``errors``: why each failed
    judgment failed (its last error). ``reasons``: failed attempts by reason:
    ``client_retries`` (HTTP attempts the client retried: 5xx, timeouts, resets, bad JSON),
    ``http_failures`` (requests whose every HTTP attempt failed), ``parse_failures`` (answers
    the strict parser rejected).
    """

    scores: list[float] | None
    per_axis: dict[Axis, list[float]]
    failed: bool
    fallback: str | None
    calls: int
    failures: int
    comparisons: int = 0
    errors: tuple[str, ...] = ()
    reasons: Mapping[str, int] = field(default_factory=dict)


@dataclass
class _Tally:
    calls: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Unit:
    """One judgment: a prompt, asked ``samples`` times; ``score`` maps a parsed answer to [0, 1]."""

    prompt: RenderedPrompt
    score: Callable[[Any], float]
    tag: str


def _excerpt(text: str, limit: int = 160) -> str:
    """The start of a judge answer, on one line, for failure reports."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= limit else flat[:limit] + "...")


def _digest_int(*parts: str) -> int:
    h = hashlib.sha256("\x00".join(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "big")


class Judge:
    """Async judge over a ``TeacherClient``; see the module docstring."""

    def __init__(self, client: TeacherClient, config: JudgeConfig | None = None, *,
                 cache: ResponseCache | None = None) -> None:  # fmt: skip
        self.config = config or JudgeConfig()
        cfg = self.config
        self.templates: dict[Axis, Template] = {}
        for axis in cfg.axes:
            directory = Path(cfg.template_dir) if cfg.template_dir is not None else None
            tpl = load_template(cfg.templates[axis], directory=directory)
            if set(tpl.placeholders) != AXIS_PLACEHOLDERS[axis]:
                raise ValueError(
                    f"template {tpl.name!r} for axis {axis.value!r} must declare placeholders "
                    f"{sorted(AXIS_PLACEHOLDERS[axis])}, got {sorted(tpl.placeholders)}"
                )
            self.templates[axis] = tpl
        self.client = client
        self.cache = cache
        # A chat template is flattened into one prompt for a completions endpoint.
        self._kind = getattr(client, "endpoint_kind", "chat")
        self._clients: dict[Axis, TeacherClient] = {
            axis: CachedClient(client, cache, tpl.version) if cache is not None else client
            for axis, tpl in self.templates.items()
        }
        self._parsers: dict[Axis, Callable[[str], Any]] = {
            Axis.SAFETY: parse_safety, Axis.FACTUALITY: parse_factuality, Axis.QUALITY: parse_quality,
            Axis.SIMILARITY: parse_similarity,
        }  # fmt: skip
        self._batches = 0
        self._m: Counter[str] = Counter()
        mode = cfg.structured_output
        if mode == "json_object" and self._kind != "chat":
            raise ValueError("structured_output 'json_object' needs a chat endpoint; on a completions "
                             "endpoint use 'grammar' or 'json_schema'")
        if mode == "auto":
            self._chain: list[str | None] = ["json_schema", "json_object" if self._kind == "chat" else "grammar", None]
        else:
            self._chain = [None if mode == "off" else mode]
        self._chain_index = 0

    # -- public API -------------------------------------------------------------------------

    async def judge(self, pools: Sequence[JudgePool | Sequence[Any]]) -> list[PoolVerdict]:
        """One verdict per pool, in input order (see the module docstring)."""
        items = [JudgePool.coerce(p) for p in pools]
        for axis in WITH_REFERENCE & set(self.config.axes):
            for k, p in enumerate(items):
                if p.reference is None:
                    raise ValueError(f"pools[{k}].reference must be the original suffix for the {axis.value} "
                                     "axis, got None")
        self._batches += 1
        batch = self._batches
        verdicts = await asyncio.gather(*(self._judge_pool(batch, k, p) for k, p in enumerate(items)))
        for v in verdicts:
            self._m["pools"] += 1
            self._m["failed_pools" if v.failed else "judged_pools"] += 1
            if v.fallback is not None:
                self._m[f"fallback_{v.fallback}"] += 1
        return list(verdicts)

    def metrics(self) -> dict[str, float]:
        """Counters since construction (or :meth:`reset_metrics`), plus derived rates.

        ``calls``: judge requests (retries and cache hits included), ``calls_per_prefix`` their
        mean per pool; ``cache_hits`` / ``cache_misses`` (requests that reached the server) and
        ``cache_hit_rate``; ``retries``, ``http_failures``, ``parse_failures`` (and
        ``parse_failure:<reason>``), ``failed_judgments``, ``failed_pools``, ``fallback_drop``,
        ``fallback_nll_original``, ``fallback_nll_unavailable``; ``comparisons`` (quality) and
        ``identical_pairs``; ``identical_candidates`` (pointwise: a text already asked about in
        its pool, scored with that verdict, not sent); ``calls:<axis>`` per axis; ``reasoning_cutoffs`` (empty answers cut
        off by the token budget) and ``structured_output_downgrades`` (``auto`` only).
        """
        m = self._m
        out: dict[str, float] = {k: 0.0 for k in (
            "pools", "judged_pools", "failed_pools", "calls", "cache_hits", "cache_misses", "retries",
            "http_failures", "parse_failures", "failed_judgments", "fallback_drop", "fallback_nll_original",
            "fallback_nll_unavailable", "comparisons", "identical_pairs", "identical_candidates", "reasoning_cutoffs",
            "structured_output_downgrades")}  # fmt: skip
        out.update({k: float(v) for k, v in m.items()})
        pools = out["pools"]
        out["calls_per_prefix"] = out["calls"] / pools if pools else 0.0
        out["comparisons_per_prefix"] = out["comparisons"] / pools if pools else 0.0
        out["cache_hit_rate"] = out["cache_hits"] / out["calls"] if out["calls"] else 0.0
        out["failure_rate"] = out["failed_pools"] / pools if pools else 0.0
        return out

    def reset_metrics(self) -> None:
        self._m.clear()

    async def aclose(self) -> None:
        """Close the teacher client (the cache belongs to the caller: close it after this)."""
        await self.client.aclose()

    # -- one pool ---------------------------------------------------------------------------

    async def _judge_pool(self, batch: int, k: int, pool: JudgePool) -> PoolVerdict:
        tally = _Tally()
        tag = f"b{batch}/p{k}"
        jobs = []
        for axis in self.config.axes:
            if axis is Axis.QUALITY:
                jobs.append(self._quality(tag, pool, tally))
            else:
                jobs.append(self._pointwise(axis, tag, pool, tally))
        results = await asyncio.gather(*jobs)
        per_axis: dict[Axis, list[float]] = {}
        comparisons = 0
        for axis, (scores, ncmp) in zip(self.config.axes, results):
            comparisons += ncmp
            if scores is not None:
                per_axis[axis] = scores
        failed = len(per_axis) != len(self.config.axes)
        fallback = None
        if failed:
            fallback = self.config.fallback
            if fallback == FALLBACK_NLL_ORIGINAL and pool.reference is None:
                self._m["fallback_nll_unavailable"] += 1
                fallback = FALLBACK_DROP
        scores = None if failed else combine(per_axis, self.config.weights)
        return PoolVerdict(scores=scores, per_axis=per_axis, failed=failed, fallback=fallback, calls=tally.calls,
                           failures=tally.failures, comparisons=comparisons, errors=tuple(tally.errors),
                           reasons=dict(tally.reasons))  # fmt: skip

    async def _pointwise(self, axis: Axis, tag: str, pool: JudgePool, tally: _Tally) -> tuple[list[float] | None, int]:
        tpl = self.templates[axis]
        units, unit_of, first = [], [], {}
        for i, cand in enumerate(pool.candidates):
            if cand in first:  # the same text gets the same verdict: asked once
                unit_of.append(first[cand])
                self._m["identical_candidates"] += 1
                continue
            values = {"candidate": cand}
            if axis in WITH_REFERENCE:
                assert pool.reference is not None
                values.update(prefix=pool.prefix, reference=pool.reference)
            first[cand] = len(units)
            unit_of.append(len(units))
            units.append(_Unit(tpl.fill(values, kind=self._kind), lambda v: v.score, f"c{i}"))
        out = await self._run_units(axis, f"{tag}/{axis.value}", units, tally)
        if any(v is None for v in out):
            return None, 0
        return [float(out[u]) for u in unit_of], 0  # type: ignore[arg-type]

    def _shown_first(self, pool: JudgePool, i: int, j: int) -> bool:
        """For position 'random': True if candidate ``i`` is shown as A (content-seeded coin)."""
        ti, tj = pool.candidates[i], pool.candidates[j]
        lo, hi = sorted((ti, tj))
        coin = _digest_int("order", str(self.config.seed), pool.prefix, lo, hi) & 1
        first_text = lo if coin == 0 else hi
        return first_text == ti

    async def _quality(self, tag: str, pool: JudgePool, tally: _Tally) -> tuple[list[float] | None, int]:
        cfg = self.config
        tpl = self.templates[Axis.QUALITY]
        n = len(pool.candidates)
        seed = _digest_int("schedule", str(cfg.seed), pool.prefix, *pool.candidates) % (2**31)
        sched = make_schedule(cfg.schedule, n, seed=seed, pivot=pool.original_index)
        rnd = 0
        while pairs := sched.next_round():
            rnd += 1
            units: list[_Unit] = []
            owners: list[list[int]] = []  # per pair: the unit indices whose mean is P(i beats j)
            for i, j in pairs:
                if pool.candidates[i] == pool.candidates[j]:
                    owners.append([])
                    self._m["identical_pairs"] += 1
                    continue
                if cfg.position == "both":
                    orders = [True, False]
                else:
                    orders = [self._shown_first(pool, i, j)]
                idx = []
                for i_first in orders:
                    a, b = (i, j) if i_first else (j, i)
                    prompt = tpl.fill({"prefix": pool.prefix, "candidate_a": pool.candidates[a],
                                       "candidate_b": pool.candidates[b]}, kind=self._kind)  # fmt: skip
                    # P(i beats j) from one answer: A won and i was A, or B won and i was B.
                    win_a = 1.0 if i_first else 0.0
                    score = (lambda w, wa=win_a: wa if w.value == "A" else 1.0 - wa)
                    idx.append(len(units))
                    units.append(_Unit(prompt, score, f"r{rnd}/{a}v{b}"))
                owners.append(idx)
            values = await self._run_units(Axis.QUALITY, f"{tag}/quality", units, tally)
            if any(v is None for v in values):
                self._m["comparisons"] += sched.comparisons
                return None, sched.comparisons
            outcomes = [mean([values[u] for u in idx]) if idx else 0.5 for idx in owners]  # type: ignore[misc]
            sched.record(outcomes)
        self._m["comparisons"] += sched.comparisons
        return sched.scores(), sched.comparisons

    # -- requests ---------------------------------------------------------------------------

    @property
    def structured_kind(self) -> str | None:
        """The structured-output form requests carry now (None: free text)."""
        return self._chain[self._chain_index]

    def _downgrade(self, rejected: str, error: str | None) -> None:
        """``auto``: the server refused form ``rejected``; move on to the next (once per form)."""
        if self._chain[self._chain_index] != rejected:
            return  # another pool's request already moved on
        self._chain_index += 1
        self._m["structured_output_downgrades"] += 1
        _log.warning("judge: the server rejected structured output %r (%s); using %s from now on",
                     rejected, error, self.structured_kind or "free text and the text parser")

    def _request(self, axis: Axis, unit: _Unit, tag: str, s: int, attempt: int, kind: str | None) -> GenerationRequest:
        params = self._params(s, attempt)
        if kind is not None:
            params = dataclasses.replace(params, structured=structured_output(axis, kind))
        prompt = unit.prompt
        suffix = "" if kind == self._chain[0] else f"/{kind or 'text'}"
        return GenerationRequest(request_id=f"{tag}/{unit.tag}/s{s}/a{attempt}{suffix}", params=params,
                                 prompt=prompt.prompt, messages=prompt.messages,
                                 assistant_prefix=prompt.assistant_prefix)  # fmt: skip

    def _parse(self, axis: Axis, text: str) -> Any:
        """The verdict of one answer per the mode (see the module docstring), or ParseError."""
        mode = self.config.structured_output
        if mode == "off":
            return self._parsers[axis](text)
        if mode != "auto":
            return parse_json_verdict(axis, text)
        try:
            return parse_json_verdict(axis, text)
        except ParseError as json_error:
            try:
                return self._parsers[axis](text)
            except ParseError as text_error:
                raise (json_error if text.strip().startswith("{") else text_error) from None

    async def _send(self, axis: Axis, client: TeacherClient, units: Sequence[_Unit], tag: str,
                    pending: Sequence[tuple[int, int]], attempt: int, tally: _Tally) -> list[Any]:
        """One round of requests for ``pending``; in ``auto`` a request whose structured form the
        server rejected (HTTP 400 / 422) is resent at once in the next form."""
        kind = self.structured_kind
        reqs = [self._request(axis, units[u], tag, s, attempt, kind) for u, s in pending]
        results = await client.generate(reqs)
        check_results(reqs, results)
        self._count_calls(axis, len(reqs), tally)
        while self.config.structured_output == "auto" and kind is not None:
            # Refused (an error naming the field), or ignored: a constrained decoder cannot
            # answer anything but a JSON object, so free text means the field was dropped.
            rejected = [i for i, r in enumerate(results)
                        if (not r.ok and _rejects_field(r.error)) or (r.ok and _ignored_field(r.text))]
            if not rejected:
                break
            first = results[rejected[0]]
            self._downgrade(kind, first.error if not first.ok else f"ignored: answered {_excerpt(first.text or '', 60)}")
            kind = self.structured_kind
            again = [self._request(axis, units[pending[i][0]], tag, pending[i][1], attempt, kind) for i in rejected]
            fresh = await client.generate(again)
            check_results(again, fresh)
            # A resend replaces its request: the judgment's calls, failures and reasons are those
            # of the form the server took, so a run that found the form earlier (a resumed one)
            # counts the same per step. The resends themselves are counted apart.
            self._m["structured_output_resends"] += len(again)
            for i, res in zip(rejected, fresh):
                results[i] = res
        return results

    def _count_calls(self, axis: Axis, n: int, tally: _Tally) -> None:
        tally.calls += n
        self._m["calls"] += n
        self._m[f"calls:{axis.value}"] += n

    def _params(self, sample: int, attempt: int) -> SamplingParams:
        cfg = self.config
        base = cfg.params.seed if cfg.params.seed is not None else cfg.seed
        temperature = cfg.params.temperature
        if attempt > 0 and cfg.retry_temperature is not None:
            temperature = max(temperature, float(cfg.retry_temperature))
        seed = base + attempt * cfg.samples_per_judgment + sample
        return dataclasses.replace(cfg.params, seed=seed, temperature=temperature)

    async def _run_units(self, axis: Axis, tag: str, units: Sequence[_Unit], tally: _Tally) -> list[float | None]:
        """Ask every unit ``samples`` times, retrying failed samples; mean score or None."""
        if not units:
            return []
        cfg = self.config
        samples: list[list[float]] = [[] for _ in units]
        last_error: dict[int, str] = {}
        pending = [(u, s) for u in range(len(units)) for s in range(cfg.samples_per_judgment)]
        client = self._clients[axis]
        for attempt in range(cfg.max_attempts):
            if not pending:
                break
            if attempt:
                self._m["retries"] += len(pending)
            results = await self._send(axis, client, units, tag, pending, attempt, tally)
            retry = []
            for (u, s), res in zip(pending, results):
                self._m["cache_hits" if res.cached else "cache_misses"] += 1
                if not res.cached:
                    tally.reasons["client_retries"] += max(0, res.attempts - 1)
                if not res.ok or res.text is None:
                    tally.failures += 1
                    tally.reasons["http_failures"] += 1
                    self._m["http_failures"] += 1
                    last_error[u] = f"{axis.value} {units[u].tag}: {res.error}"
                    retry.append((u, s))
                    continue
                try:
                    if not res.text.strip() and res.finish_reason == "length":
                        self._m["reasoning_cutoffs"] += 1
                        raise ParseError(axis, CUT_OFF_WHILE_REASONING, res.text)
                    verdict = self._parse(axis, res.text)
                except ParseError as err:
                    tally.failures += 1
                    tally.reasons["parse_failures"] += 1
                    self._m["parse_failures"] += 1
                    self._m[f"parse_failure:{err.reason}"] += 1
                    last_error[u] = f"{axis.value} {units[u].tag}: {err.reason}; answer: {_excerpt(res.text)}"
                    retry.append((u, s))
                    continue
                samples[u].append(units[u].score(verdict))
            pending = retry
        failed_units = sorted({u for u, _ in pending})
        for u in failed_units:
            self._m["failed_judgments"] += 1
            tally.errors.append(last_error[u])
        return [None if u in failed_units else mean(samples[u]) for u in range(len(units))]


_FIELD_WORDS = ("response_format", "json_schema", "json_object", "grammar", "schema", "structured", "guided")


def _ignored_field(text: str | None) -> bool:
    """True for an answer to a structured request that is not even the start of a JSON object."""
    return text is not None and bool(text.strip()) and not text.lstrip().startswith("{")


def _rejects_field(error: str | None) -> bool:
    """True for a server refusing the structured-output field: HTTP 400, 422 or 500 whose message
    names it (llama-cpp-python 0.3.36 answers an unknown response_format type with a 500 quoting
    its validation error); a context-length 400 must not switch the format off."""
    if not error or not error.startswith(("HTTP 400", "HTTP 422", "HTTP 500")):
        return False
    low = error.lower()
    return any(w in low for w in _FIELD_WORDS)


def to_group(verdict: PoolVerdict, group: CandidateGroup) -> CandidateGroup:
    """``group`` (judged by nobody yet) with ``verdict``'s scores filled in.

    A failed verdict leaves ``scores=None``: ``select()`` then skips the group as "unjudged"
    (what to train instead is ``verdict.fallback``).
    """
    if group.scores is not None:
        raise ValueError(f"group {group.group_id}: scores must be None before judging, got {group.scores}")
    if verdict.scores is None:
        return group
    if len(verdict.scores) != group.num_candidates:
        raise ValueError(
            f"group {group.group_id}: verdict has {len(verdict.scores)} scores for {group.num_candidates} candidates"
        )
    return dataclasses.replace(group, scores=tuple(verdict.scores))
