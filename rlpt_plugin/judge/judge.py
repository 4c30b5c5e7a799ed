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
the prefix) or ``"rf_nll_on_original"`` (train NLL on the original suffix; needs a reference, else
the pool falls back to ``"drop"``, counted as ``fallback_nll_unavailable``). Every retry,
failure and fallback is counted in :meth:`Judge.metrics`.

Structured output (``structured_output``; the forms, the order ``auto`` tries them in and the
parsers: :mod:`rlpt_plugin.judge.structured`). Each refusal or ignored field moves ``auto`` to
its next form for the rest of the judge's life, logged and counted as
``structured_output_downgrades``; the request is resent at once and costs no attempt. The
format is part of the sampling params and so of the cache key.

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
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlpt_plugin.judge.axes import WITH_REFERENCE, Axis, combine, mean
from rlpt_plugin.judge.pools import (AXIS_PLACEHOLDERS, FALLBACK_DROP, FALLBACK_RF_NLL_ON_ORIGINAL, JudgeConfig,
                                     JudgePool, PoolVerdict)
from rlpt_plugin.judge.parsing import ParseError, parse_factuality, parse_quality, parse_safety, parse_similarity
from rlpt_plugin.judge.schedules import make_schedule
from rlpt_plugin.judge.structured import FormatChain, structured_output
from rlpt_plugin.teacher.cache import CachedClient, ResponseCache
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams, TeacherClient, check_results
from rlpt_plugin.teacher.templates import RenderedPrompt, Template, load_template

CUT_OFF_WHILE_REASONING = "answer cut off while reasoning: raise rlpt.judge.max_tokens"
_log = logging.getLogger(__name__)


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
        self._formats = FormatChain(cfg.structured_output, self._kind)

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
        """Counters since construction, plus derived rates.

        ``calls``: judge requests (retries and cache hits included), ``calls_per_prefix`` their
        mean per pool; ``cache_hits`` / ``cache_misses`` (requests that reached the server) and
        ``cache_hit_rate``; ``retries``, ``http_failures``, ``parse_failures`` (and
        ``parse_failure:<reason>``), ``failed_judgments``, ``failed_pools``, ``fallback_drop``,
        ``fallback_rf_nll_on_original``, ``fallback_nll_unavailable``; ``comparisons`` (quality) and
        ``identical_pairs``; ``identical_candidates`` (pointwise: a text already asked about in
        its pool, scored with that verdict, not sent); ``calls:<axis>`` per axis; ``reasoning_cutoffs`` (empty answers cut
        off by the token budget) and ``structured_output_downgrades`` (``auto`` only).
        """
        m = self._m
        out: dict[str, float] = {k: 0.0 for k in (
            "pools", "judged_pools", "failed_pools", "calls", "cache_hits", "cache_misses", "retries",
            "http_failures", "parse_failures", "failed_judgments", "fallback_drop", "fallback_rf_nll_on_original",
            "fallback_nll_unavailable", "comparisons", "identical_pairs", "identical_candidates", "reasoning_cutoffs",
            "structured_output_downgrades")}  # fmt: skip
        out.update({k: float(v) for k, v in m.items()})
        pools = out["pools"]
        out["calls_per_prefix"] = out["calls"] / pools if pools else 0.0
        out["comparisons_per_prefix"] = out["comparisons"] / pools if pools else 0.0
        out["cache_hit_rate"] = out["cache_hits"] / out["calls"] if out["calls"] else 0.0
        out["failure_rate"] = out["failed_pools"] / pools if pools else 0.0
        return out

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
            if fallback == FALLBACK_RF_NLL_ON_ORIGINAL and pool.reference is None:
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
        return self._formats.current

    def _downgrade(self, rejected: str, error: str | None) -> None:
        """``auto``: the server refused form ``rejected``; move on to the next (once per form)."""
        if not self._formats.downgrade(rejected):
            return  # another pool's request already moved on
        self._m["structured_output_downgrades"] += 1
        _log.warning("judge: the server rejected structured output %r (%s); using %s from now on",
                     rejected, error, self.structured_kind or "free text and the text parser")

    def _request(self, axis: Axis, unit: _Unit, tag: str, s: int, attempt: int, kind: str | None) -> GenerationRequest:
        params = self._params(s, attempt)
        if kind is not None:
            params = dataclasses.replace(params, structured=structured_output(axis, kind))
        prompt = unit.prompt
        suffix = "" if kind == self._formats.first else f"/{kind or 'text'}"
        return GenerationRequest(request_id=f"{tag}/{unit.tag}/s{s}/a{attempt}{suffix}", params=params,
                                 prompt=prompt.prompt, messages=prompt.messages,
                                 assistant_prefix=prompt.assistant_prefix)  # fmt: skip


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
            rejected = [i for i, r in enumerate(results) if self._formats.refused(r.ok, r.text, r.error)]
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
                    verdict = self._formats.parse(axis, res.text, self._parsers[axis])
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

