"""The ``rlpt`` config section: typed, documented, validated with every error reported at once.

Attached to a Megatron-Bridge ``ConfigContainer`` (see rlpt_plugin/megatron/bridge_host.py) and
overridable with Bridge's Hydra syntax, e.g. ``rlpt.loss.beta=0.05 rlpt.loss.dpo.start=0.5``.
No megatron imports: the cross-checks against the host config live in the host adapter.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from rlpt_plugin.judge.pools import FALLBACKS, POSITIONS
from rlpt_plugin.judge.schedules import SCHEDULES
from rlpt_plugin.judge.structured import MODES as STRUCTURED_OUTPUT_MODES
from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.pool import RULES
from rlpt_plugin.rl.weights import MixedWeights, WeightSchedule
from rlpt_plugin.teacher.protocol import ENDPOINT_KINDS

REFERENCE_MODES = ("rollout", "frozen", "none")
SOURCES = ("synthetic", "store")
JUDGE_BACKENDS = ("openai", "world")
#: The judge axes in the order the config lists their weights (and the judge asks them).
JUDGE_AXES = ("quality", "safety", "factuality", "similarity")
PREFIX_SHARING = ("auto", "shared", "unpacked")


SECRET_QUERY_KEYS = frozenset({"key", "api_key", "apikey", "api-key", "token", "access_token", "auth"})


def _url_credentials(url: Any) -> str:
    """What in ``url`` is a credential ("user info", "query key 'api_key'"), never its value."""
    from urllib.parse import parse_qsl, urlsplit

    if not isinstance(url, str):
        return ""
    parts = urlsplit(url)
    if parts.username or parts.password:
        return "user info before the host"
    keys = sorted({k for k, _ in parse_qsl(parts.query)} & SECRET_QUERY_KEYS)
    return f"query key {keys[0]!r}" if keys else ""


class ConfigError(ValueError):
    """Every problem found in a config, one per line, each naming field, constraint and value."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid rlpt configuration:\n  - " + "\n  - ".join(self.errors))


def _number(errors: list[str], path: str, value: Any, *, minimum: float | None = None,
            strictly: bool = False, integer: bool = False) -> None:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not math.isfinite(value):
        errors.append(f"`{path}` must be a finite {'integer' if integer else 'number'}, "
                      f"but is {value!r} instead.")
        return
    if minimum is not None and (value <= minimum if strictly else value < minimum):
        errors.append(f"`{path}` must be {'>' if strictly else '>='} {minimum}, but is {value!r} instead.")


def _choice(errors: list[str], path: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        errors.append(f"`{path}` must be one of {', '.join(choices)}, but is {value!r} instead.")


@dataclass(kw_only=True)
class TermWeight:
    """The weight of one loss term over training steps."""

    start: float = 1.0
    """Weight at and before ``begin_step`` (the whole run when ``kind`` is constant)."""
    end: float | None = None
    """Weight at and after ``end_step`` (linear and cosine only)."""
    kind: str = "constant"
    """constant | linear | cosine."""
    begin_step: int = 0
    """First step of the ramp."""
    end_step: int = 0
    """Last step of the ramp (> begin_step for linear and cosine)."""

    def validate(self, path: str) -> list[str]:
        try:
            self.build()
        except ValueError as err:
            return [f"`{path}`: {err}"]
        return []

    def build(self) -> WeightSchedule:
        return WeightSchedule(kind=self.kind, start=self.start, end=self.end,
                              begin_step=self.begin_step, end_step=self.end_step)


@dataclass(kw_only=True)
class LossSection:
    """The mixed loss: weight * term, each term normalised by its own global count."""

    lm: TermWeight = field(default_factory=lambda: TermWeight(start=1.0))
    """Next-token NLL on the original text (prefix + original suffix), per token."""
    dpo: TermWeight = field(default_factory=lambda: TermWeight(start=1.0))
    """Online DPO on (best, worst) candidates, per pair."""
    rf_nll: TermWeight = field(default_factory=lambda: TermWeight(start=0.0))
    """Reward-filtered NLL on the best candidate's tokens, per token."""
    beta: float = 0.1
    """DPO temperature (> 0). The paper leaves it open; 0.1 is common for online DPO."""
    dpo_reduction: str = "sum"
    """sum | mean: a candidate's sequence log-prob is the sum (default) or mean of its tokens."""
    reference: str = "rollout"
    """rollout (default) | frozen | none. rollout: the policy at the time the candidates were
    built, a moving anchor suited to long pretraining and free for rollouts; frozen: a copy of
    the start weights (classic DPO, one more forward and weight copy); none: reference-free."""
    selection: str = "dpo"
    """dpo (chosen = best, rejected = worst, plus best for RF-NLL) | rf_nll (best only)."""
    check_values: bool = True
    """Check masks and log-probs for NaN/inf and empty suffixes every micro-batch."""

    def has_rl_terms(self) -> bool:
        """Whether DPO or RF-NLL ever has a non-zero weight. Without one the run is plain
        next-token training: no candidate stage, no judge, no RL rows (``source=store`` then
        trains on prefix + original suffix of the store's windows, the baseline of the method)."""
        return any(w.start or w.end for w in (self.dpo, self.rf_nll))

    def weights(self) -> MixedWeights:
        return MixedWeights(lm=self.lm.build(), dpo=self.dpo.build(), rf_nll=self.rf_nll.build())

    def loss_config(self) -> LossConfig:
        return LossConfig(beta=self.beta, dpo_reduction=self.dpo_reduction)

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        for name in ("lm", "dpo", "rf_nll"):
            errors += getattr(self, name).validate(f"{path}.{name}")
        _number(errors, f"{path}.beta", self.beta, minimum=0, strictly=True)
        _choice(errors, f"{path}.dpo_reduction", self.dpo_reduction, ("sum", "mean"))
        _choice(errors, f"{path}.reference", self.reference, REFERENCE_MODES)
        _choice(errors, f"{path}.selection", self.selection, RULES)
        if self.selection == "rf_nll" and (self.dpo.start or self.dpo.end):
            errors.append(f"`{path}.selection` is 'rf_nll' (no DPO pairs), but `{path}.dpo` has a "
                          "non-zero weight: set rlpt.loss.dpo.start=0 or selection=dpo.")
        return errors


@dataclass(kw_only=True)
class SyntheticSection:
    """The deterministic group source (rlpt_plugin/rl/synthetic.py) used before a teacher exists."""

    min_prefix: int = 4
    max_prefix: int = 12
    suffix_length: int = 6
    num_rollouts: int = 3
    include_original: bool = True


@dataclass(kw_only=True)
class CandidateSection:
    """The in-loop candidate stage (``rlpt.data.source=store``): pools of original suffix,
    rewrite and K rollouts from the live policy."""

    num_rollouts: int = 4
    """K rollouts per prefix (paper: 1..16, 16 best)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (paper: 1.0)."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts (paper: 1.0)."""
    original: bool = True
    """The original suffix enters the pool (paper's best safety pool: rollouts + original)."""
    rewrite: bool = False
    """The teacher's offline rewrite enters the pool when the store has a usable one."""
    rollouts: bool = True
    """The policy's rollouts enter the pool."""
    staleness: int = 1
    """Steps the candidates are built ahead of the step that trains on them (judging overlaps
    training); 0 judges at step start and waits."""
    share_prefill: bool = True
    """Prefill each prefix once and copy its KV cache to its K rollouts."""
    length_buckets: bool = True
    """Sample prefixes whose lengths differ by N or more in separate static batches, instead of
    feeding every longer prefix's extra tokens one decode step at a time (rlpt_plugin/megatron/
    rollout.py). False: one batch (fewer, wider steps; can win on a GPU when lengths are close)."""
    thinking_budget: int = 0
    """RL mid-training: each rollout may first think for up to this many tokens
    (``think_open`` ... ``think_close``, delimiters included), then writes its N-token answer,
    which is what the judge sees (rlpt_plugin/rl/thinking.py). 0: plain rollouts of N tokens."""
    think_open: str = "<think>"
    """Text that opens a thought (encoded with the store's tokenizer)."""
    think_close: str = "</think>"
    """Text that closes a thought."""

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        _number(errors, f"{path}.num_rollouts", self.num_rollouts, minimum=0, integer=True)
        _number(errors, f"{path}.thinking_budget", self.thinking_budget, minimum=0, integer=True)
        if self.thinking_budget and not (self.rollouts and self.num_rollouts):
            errors.append(f"`{path}.thinking_budget` is {self.thinking_budget}, but the pool has no rollouts: "
                          "only rollouts think. Enable rollouts or set thinking_budget 0.")
        for name in ("think_open", "think_close"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                errors.append(f"`{path}.{name}` must be a non-empty string, but is {getattr(self, name)!r}.")
        _number(errors, f"{path}.temperature", self.temperature, minimum=0, strictly=True)
        _number(errors, f"{path}.top_p", self.top_p, minimum=0, strictly=True)
        if isinstance(self.top_p, (int, float)) and self.top_p > 1:
            errors.append(f"`{path}.top_p` must be <= 1, but is {self.top_p} instead.")
        _number(errors, f"{path}.staleness", self.staleness, minimum=0, integer=True)
        if not (self.original or self.rewrite or (self.rollouts and self.num_rollouts)):
            errors.append(f"`{path}`: the pool is empty (enable original, rewrite or rollouts).")
        return errors


@dataclass(kw_only=True)
class JudgeSection:
    """The teacher as judge: an LLM behind OpenAI-protocol endpoints, or the synthetic world's
    exact oracle."""

    backend: str = "openai"
    """openai (an LLM behind ``endpoints`` serving ``model``) | world (the synthetic world's
    oracle judge, rlpt_plugin/world/teacher.py: no endpoints, exact verdicts on the knowledge
    base of ``world_seed``; ``position``, ``samples``, ``concurrency`` and ``cache`` are unused)."""
    noise_rate: float = 0.1
    """world only: probability in [0, 1) that one oracle judgment is flipped (reproducible).
    Default 0.1: the training judge errs like an LLM judge (rlpt_plugin/world/teacher.py); 0 is
    the exact oracle."""
    world_knowledge: float = 0.8
    """world only: share in [0, 1] of the knowledge base's facts the judge knows; on the others
    it trusts the reference (rlpt_plugin/world/knowledge.py). 1 is the exact oracle."""
    world_seed: int = 0
    """world only: the WorldConfig seed the corpus was generated with."""
    world_entities: int = 200
    """world only: the WorldConfig entity count the corpus was generated with."""
    endpoints: list[str] = field(default_factory=list)
    """Base URLs of the inference servers (e.g. http://judge-0:8000/v1); requests spread over them."""
    model: str = ""
    """Model name the servers serve."""
    quality: float = 1.0
    """Weight of the pairwise quality axis (win rate)."""
    safety: float = 0.0
    """Weight of the pointwise safety axis (1 safe / 0 unsafe)."""
    factuality: float = 0.0
    """Weight of the pointwise factuality axis (1 / 0.5 / 0 for none / possible / definite)."""
    similarity: float = 0.0
    """Weight of the pointwise similarity axis (1 same content as the original suffix / 0 not):
    the binary reward of RL mid-training, read from a thinking rollout's answer."""
    schedule: str = "round_robin"
    """Quality pairing: round_robin (paper, all pairs), pivot (vs the original), tournament (O(K))."""
    position: str = "random"
    """Position-bias control: random order per comparison, or both orders."""
    samples: int = 1
    """Judge samples averaged per judgment (paper: 5 for a small judge)."""
    fallback: str = "drop"
    """A pool that cannot be judged leaves the DPO term (counted as ``unjudged_pool_rate``).
    drop: nothing else; nll_original: its original suffix becomes the pool's RF-NLL target, so
    the RF-NLL term keeps its share of the batch through a judge outage (needs the original in
    the pool and an RF-NLL weight > 0; anything else would make it a silent copy of drop)."""
    temperature: float = 0.0
    """Sampling temperature of each judge request (paper's small judge: 1.0). 0 is greedy, which
    allows one sample per judgment only (more would be identical requests)."""
    top_p: float = 1.0
    """Nucleus sampling of each judge request (paper's small judge: 0.6)."""
    max_tokens: int = 4096
    """New tokens per judge answer. Reasoning judges (gpt-oss) think before the verdict: a small
    budget cuts them off before they answer, which counts as a parse failure."""
    request_timeout_s: float = 300.0
    """Seconds one judge request may take before the client retries it elsewhere."""
    max_attempts: int = 4
    """HTTP attempts per request (5xx, timeouts, resets are retried with back-off, over the endpoints)."""
    endpoint_kind: str = "chat"
    """chat (/v1/chat/completions) | completions (/v1/completions): which route the servers expose."""
    api_key_env: str = ""
    """Name of the environment variable that holds the endpoints' API key (sent as a Bearer
    token); empty: no key. The key itself never enters the config, logs or checkpoints."""
    concurrency: int = 64
    """Judge requests in flight."""
    structured_output: str = "auto"
    """Verdicts as JSON constrained by each axis's schema (rlpt_plugin/judge/structured.py), so
    that they parse by construction. auto (default): OpenAI's response_format json_schema first;
    a server that refuses it (HTTP 400 / 422 / 500 naming the field) or ignores it (answers free
    text) gets the next form (json_object on chat, grammar on completions), then free text read
    by the strict text parser; each step is logged and counted (structured_output_downgrades).
    json_schema (vLLM, SGLang, llama-server, OpenAI) | json_object (llama-cpp-python's server,
    chat only) | grammar (a GBNF grammar: llama-cpp-python, llama-server): always that form, and
    only the schema's JSON is accepted. off: free text and the strict text parsers. The form is
    part of the verdict cache key."""
    cache: str | None = None
    """Verdict cache (sqlite); default: <checkpoint.save>/rlpt_judge_cache.sqlite. One file per
    data-parallel rank, the rank inserted before the suffix: rlpt_judge_cache.dp000.sqlite, ..."""
    verdict_timeout_s: float = 3600.0
    """Seconds the trainer waits for a step's verdicts before every rank stops with the reason."""
    max_unjudged_share: float = 0.5
    """Stop the run when more than this share of the pools of the last ``unjudged_window`` steps
    could not be judged (every retry failed): a judge that never answers usefully would
    otherwise turn the job into slow next-token training. 1.0 never stops."""
    unjudged_window: int = 20
    """Steps over which ``max_unjudged_share`` is measured (all data-parallel ranks together);
    long enough that a transient outage that retries and failover absorb does not trip it."""

    def axis_weights(self, *, keep_zero: bool = False) -> dict[str, float]:
        """Axis -> weight of the enabled axes (weight > 0), in :data:`JUDGE_AXES` order."""
        return {a: getattr(self, a) for a in JUDGE_AXES if keep_zero or getattr(self, a) > 0}

    def validate(self, path: str, needed: bool) -> list[str]:
        errors: list[str] = []
        _choice(errors, f"{path}.backend", self.backend, JUDGE_BACKENDS)
        before = len(errors)
        _number(errors, f"{path}.noise_rate", self.noise_rate, minimum=0)
        if len(errors) == before and self.noise_rate >= 1:
            errors.append(f"`{path}.noise_rate` must be in [0, 1), but is {self.noise_rate!r} instead.")
        before = len(errors)
        _number(errors, f"{path}.world_knowledge", self.world_knowledge, minimum=0)
        if len(errors) == before and self.world_knowledge > 1:
            errors.append(f"`{path}.world_knowledge` must be in [0, 1], but is {self.world_knowledge!r} instead.")
        _number(errors, f"{path}.world_seed", self.world_seed, minimum=0, integer=True)
        _number(errors, f"{path}.world_entities", self.world_entities, minimum=1, integer=True)
        needed = needed and self.backend == "openai"
        for i, url in enumerate(self.endpoints):
            if _url_credentials(url):
                errors.append(f"`{path}.endpoints[{i}]` carries credentials in the URL ({_url_credentials(url)}), "
                              "which would be saved with the run config and printed in errors: "
                              f"put the key in an environment variable named by {path}.api_key_env.")
        if needed and not self.endpoints:
            errors.append(f"`{path}.endpoints` must list at least one URL for rlpt.data.source=store, "
                          "but is empty.")
        if needed and not self.model:
            errors.append(f"`{path}.model` must name the judge model, but is empty.")
        for axis in JUDGE_AXES:
            _number(errors, f"{path}.{axis}", getattr(self, axis), minimum=0)
        if not any(getattr(self, axis) for axis in JUDGE_AXES):
            errors.append(f"`{path}`: at least one axis weight must be > 0.")
        _choice(errors, f"{path}.schedule", self.schedule, SCHEDULES)
        _choice(errors, f"{path}.position", self.position, POSITIONS)
        _choice(errors, f"{path}.fallback", self.fallback, FALLBACKS)
        _number(errors, f"{path}.samples", self.samples, minimum=1, integer=True)
        _number(errors, f"{path}.concurrency", self.concurrency, minimum=1, integer=True)
        _number(errors, f"{path}.temperature", self.temperature, minimum=0)
        _number(errors, f"{path}.top_p", self.top_p, minimum=0, strictly=True)
        if isinstance(self.top_p, (int, float)) and self.top_p > 1:
            errors.append(f"`{path}.top_p` must be <= 1, but is {self.top_p} instead.")
        if self.backend == "openai" and self.temperature == 0 and isinstance(self.samples, int) \
                and self.samples > 1:
            errors.append(f"`{path}.samples` is {self.samples} with `{path}.temperature` 0: greedy "
                          "requests give the same answer every time, so the samples would be identical "
                          f"calls. Set {path}.temperature > 0 (paper's small judge: 1.0, top_p 0.6) "
                          "or samples=1.")
        _number(errors, f"{path}.max_tokens", self.max_tokens, minimum=1, integer=True)
        _number(errors, f"{path}.request_timeout_s", self.request_timeout_s, minimum=0, strictly=True)
        _number(errors, f"{path}.max_attempts", self.max_attempts, minimum=1, integer=True)
        _choice(errors, f"{path}.endpoint_kind", self.endpoint_kind, ENDPOINT_KINDS)
        _choice(errors, f"{path}.structured_output", self.structured_output, STRUCTURED_OUTPUT_MODES)
        if self.structured_output == "json_object" and self.endpoint_kind == "completions":
            errors.append(f"`{path}.structured_output` json_object is a chat-route field, but "
                          f"`{path}.endpoint_kind` is completions: use grammar or json_schema there.")
        if not isinstance(self.api_key_env, str):
            errors.append(f"`{path}.api_key_env` must be the NAME of an environment variable, "
                          f"but is a {type(self.api_key_env).__name__}.")
        elif needed and self.api_key_env and not os.environ.get(self.api_key_env):
            errors.append(f"`{path}.api_key_env` names the environment variable "
                          f"{self.api_key_env!r}, which is not set (or empty) in this process.")
        _number(errors, f"{path}.verdict_timeout_s", self.verdict_timeout_s, minimum=0, strictly=True)
        before = len(errors)
        _number(errors, f"{path}.max_unjudged_share", self.max_unjudged_share, minimum=0)
        if len(errors) == before and self.max_unjudged_share > 1:
            errors.append(f"`{path}.max_unjudged_share` must be in [0, 1], but is "
                          f"{self.max_unjudged_share!r} instead.")
        _number(errors, f"{path}.unjudged_window", self.unjudged_window, minimum=1, integer=True)
        return errors


@dataclass(kw_only=True)
class DataSection:
    """Where each step's candidate groups come from and how they are packed."""

    source: str = "store"
    """store (default: windows of the rewritten ``stores`` through the in-loop candidate stage,
    rollouts + judge) | synthetic (ready-made scored counting groups, no teacher: for tests and
    smoke runs only, never a default)."""
    stores: list[str] = field(default_factory=list)
    """Rewritten stores (rlpt rewrite) to draw windows from, blended by size."""
    tokenizer: str = ""
    """Local tokenizer directory (must match the stores' fingerprint); the judge sees text."""
    groups_per_step: int = 8
    """Candidate groups (prefixes) per optimizer step over ALL data-parallel ranks."""
    seed: int = 1234
    """Seed of the group source."""
    lm_on_original: bool = True
    """Train the LM term on every group's document text (prefix + original suffix), whether or
    not the original suffix is also a candidate of the pool."""
    job_sequences_per_step: int = 0
    """Sequences of the job's own pretraining data (the ``dataset`` it had before with_rlpt, kept
    as ``dataset.job_data``) per optimizer step over ALL data-parallel ranks, trained by the LM
    term next to the groups' rows; 0: none. Each is one ``model.seq_length`` sample of Megatron's
    own dataset (its blend, split, seed and loss mask)."""
    think_stores: list[str] = field(default_factory=list)
    """Think stores (``rlpt rewrite --task think``: thought-augmented chunks), blended by size, for
    thinking SFT: ``think_sequences_per_step`` of their chunks per step are trained by the LM term
    on every token, original and thought (rlpt_plugin/megatron/think_dataset.py). Blends with the
    groups of ``source`` and the job's own data. When ``tokenizer`` is set, the stores must have
    been written with it."""
    think_sequences_per_step: int = 0
    """Chunks of ``think_stores`` per optimizer step over ALL data-parallel ranks, each one LM-only
    row (cut to ``model.seq_length`` + 1 tokens); 0: none (then ``think_stores`` must be empty)."""
    prefix_sharing: str = "auto"
    """How a pool's trained rows (LM row on the original, chosen, rejected, RF-NLL target) are
    packed (rlpt_plugin/rl/shared_rows.py). shared: ONE row per pool, the prefix once, each
    candidate attending to the prefix and to itself only, at the positions of its own row; the
    log-probs, losses and gradients equal the unpacked rows' (fp32 tolerance), and a prefix of
    ~S tokens is computed once instead of up to three times. Needs megatron's local attention
    (the mask is applied) and unfused RoPE; anything else is refused at train start with the
    reason. unpacked: one row per candidate, each repeating the prefix (the reference path).
    auto (default): shared where the built model computes it exactly, otherwise unpacked, with a
    warning that names the reason. ``train.micro_batch_size`` stays the budget of UNPACKED rows;
    shared micro-batches hold one row per pool, wider than ``model.seq_length`` (prefix + every
    candidate). A pool whose candidates would need different prefix cuts (a candidate longer
    than the others near a full-length prefix) keeps its unpacked rows, in the same micro-batch.
    Under pipeline parallelism the plugin sets ``model.variable_seq_lengths=True`` so the stages
    exchange the wider shape. Next-token-only runs have one row per prefix: always unpacked."""
    synthetic: SyntheticSection = field(default_factory=SyntheticSection)

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        _choice(errors, f"{path}.source", self.source, SOURCES)
        _choice(errors, f"{path}.prefix_sharing", self.prefix_sharing, PREFIX_SHARING)
        if self.source == "store" and not self.stores:
            errors.append(f"`{path}.stores` must list at least one rewritten store for source=store, "
                          "but is empty.")
        if self.source == "store" and not self.tokenizer:
            errors.append(f"`{path}.tokenizer` must name the stores' tokenizer for source=store, but is empty.")
        if self.source == "synthetic" and (self.stores or (self.tokenizer and not self.think_stores)):
            given = "stores" if self.stores else "tokenizer"
            errors.append(f"`{path}.source` is 'synthetic' (ready-made counting groups), but "
                          f"`{path}.{given}` is set and would be ignored: set {path}.source=store to "
                          "train on the stores.")
        _number(errors, f"{path}.groups_per_step", self.groups_per_step, minimum=1, integer=True)
        _number(errors, f"{path}.seed", self.seed, minimum=0, integer=True)
        _number(errors, f"{path}.job_sequences_per_step", self.job_sequences_per_step, minimum=0, integer=True)
        before = len(errors)
        _number(errors, f"{path}.think_sequences_per_step", self.think_sequences_per_step, minimum=0, integer=True)
        if len(errors) == before and bool(self.think_stores) != bool(self.think_sequences_per_step):
            errors.append(f"`{path}.think_sequences_per_step` ({self.think_sequences_per_step}) must be > 0 "
                          f"exactly when `{path}.think_stores` lists think stores, but it lists "
                          f"{len(self.think_stores)}: set both (thinking SFT) or neither.")
        s = self.synthetic
        for name in ("min_prefix", "max_prefix", "suffix_length"):
            _number(errors, f"{path}.synthetic.{name}", getattr(s, name), minimum=1, integer=True)
        _number(errors, f"{path}.synthetic.num_rollouts", s.num_rollouts, minimum=0, integer=True)
        if isinstance(s.min_prefix, int) and isinstance(s.max_prefix, int) and s.min_prefix > s.max_prefix:
            errors.append(f"`{path}.synthetic.min_prefix` must be <= max_prefix ({s.max_prefix}), "
                          f"but is {s.min_prefix} instead.")
        return errors


@dataclass(kw_only=True)
class RLPTConfig:
    """Self-improving pretraining settings (the ``rlpt`` section)."""

    loss: LossSection = field(default_factory=LossSection)
    data: DataSection = field(default_factory=DataSection)
    candidates: CandidateSection = field(default_factory=CandidateSection)
    judge: JudgeSection = field(default_factory=JudgeSection)

    def errors(self) -> list[str]:
        in_loop = self.data.source == "store" and self.loss.has_rl_terms()
        errors = (self.loss.validate("rlpt.loss") + self.data.validate("rlpt.data")
                  + self.candidates.validate("rlpt.candidates")
                  + self.judge.validate("rlpt.judge", needed=in_loop))
        errors += self._silent_no_op_errors(in_loop)
        if self.data.job_sequences_per_step and not (self.loss.lm.start or self.loss.lm.end):
            errors.append(f"`rlpt.data.job_sequences_per_step` is {self.data.job_sequences_per_step}, but "
                          "`rlpt.loss.lm` has weight 0 throughout: the job's own data would be packed "
                          "and never trained on. Give rlpt.loss.lm a weight or set it to 0.")
        return errors

    def _silent_no_op_errors(self, in_loop: bool) -> list[str]:
        """Settings that would be accepted and then do nothing."""
        errors: list[str] = []
        loss, data, judge = self.loss, self.data, self.judge
        if judge.fallback == "nll_original" and in_loop:
            if not self.candidates.original:
                errors.append("`rlpt.judge.fallback` is 'nll_original' (an unjudged pool trains RF-NLL "
                              "on its original suffix), but `rlpt.candidates.original` is False: the "
                              "original is not in the pool. Use fallback=drop or put the original in.")
            if not (loss.rf_nll.start or loss.rf_nll.end):
                errors.append("`rlpt.judge.fallback` is 'nll_original' (an unjudged pool trains RF-NLL "
                              "on its original suffix), but `rlpt.loss.rf_nll` has weight 0 throughout, "
                              "so it would do exactly what 'drop' does. Give rlpt.loss.rf_nll a weight "
                              "or use fallback=drop.")
        lm_weighted = bool(loss.lm.start or loss.lm.end)
        lm_sources = data.lm_on_original or data.job_sequences_per_step > 0
        if data.source == "synthetic" and not data.synthetic.include_original:
            lm_sources = data.job_sequences_per_step > 0
        if lm_weighted and not lm_sources:
            errors.append("`rlpt.loss.lm` has a non-zero weight, but nothing feeds the LM term: "
                          "`rlpt.data.lm_on_original` is False (or the synthetic groups have no "
                          "original) and `rlpt.data.job_sequences_per_step` is 0. Set "
                          "rlpt.loss.lm.start=0 or give it data.")
        if not loss.has_rl_terms() and not lm_weighted:
            errors.append("every loss term has weight 0 throughout (`rlpt.loss.lm`, `.dpo`, "
                          "`.rf_nll`): the run would train nothing.")
        return errors

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise ConfigError(errors)
