"""The ``rlpt.judge`` config section (moved out of rlpt_plugin/config.py, which re-exports it)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlpt_plugin.config_checks import _choice, _number
from rlpt_plugin.judge.pools import FALLBACKS, POSITIONS
from rlpt_plugin.judge.schedules import SCHEDULES
from rlpt_plugin.judge.structured import MODES as STRUCTURED_OUTPUT_MODES
from rlpt_plugin.teacher.credentials import MissingKeyError, key_from_env
from rlpt_plugin.teacher.protocol import ENDPOINT_KINDS

JUDGE_BACKENDS = ("openai", "world")
#: The judge axes in the order the config lists their weights (and the judge asks them).
JUDGE_AXES = ("quality", "safety", "factuality", "similarity")


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
    drop: nothing else; rf_nll_on_original: its original suffix becomes the pool's RF-NLL target, so
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

    def build(self, *, seed: int, cache_path: Path | None = None) -> Any:
        """The in-loop stage's pool judge this section configures: the world's oracle
        (``backend: world``) or the teacher judge behind its endpoints, adapted to the stage
        (``openai``; verdicts cached at ``cache_path``). ``seed``: the run's data seed (judge
        noise and position order are pure functions of it)."""
        if self.backend == "world":
            return self.build_world_judge(seed=seed)
        from rlpt_plugin.judge.adapter import JudgeAdapter

        return JudgeAdapter(self.build_teacher_judge(seed=seed, cache_path=cache_path))

    def build_teacher_judge(self, *, seed: int, cache_path: Path | None = None) -> Any:
        """The LLM judge (:class:`rlpt_plugin.judge.judge.Judge`) over an OpenAI-protocol client."""
        from rlpt_plugin.judge.judge import Judge
        from rlpt_plugin.judge.pools import JudgeConfig
        from rlpt_plugin.teacher.cache import ResponseCache
        from rlpt_plugin.teacher.openai_client import OpenAIClient
        from rlpt_plugin.teacher.protocol import SamplingParams

        weights = self.axis_weights()
        client = OpenAIClient(self.endpoints, self.model, api_key=self.api_key(), endpoint_kind=self.endpoint_kind,
                              max_concurrency=self.concurrency, timeout_s=self.request_timeout_s,
                              max_attempts=self.max_attempts)
        cache = ResponseCache(str(cache_path)) if cache_path is not None else None
        params = SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)
        return Judge(client, JudgeConfig(axes=tuple(weights), weights=weights, schedule=self.schedule,
                                         position=self.position, samples_per_judgment=self.samples, params=params,
                                         fallback=self.fallback, seed=seed,
                                         structured_output=self.structured_output), cache=cache)

    def build_world_judge(self, *, seed: int) -> Any:
        """The synthetic world's judge (:class:`rlpt_plugin.world.teacher.OracleJudge`): knows a
        ``world_knowledge`` share of the facts and flips a ``noise_rate`` of its judgments."""
        from rlpt_plugin.world import WorldConfig, build_kb
        from rlpt_plugin.world.teacher import OracleJudge

        weights = self.axis_weights()
        return OracleJudge(build_kb(WorldConfig(seed=self.world_seed, num_entities=self.world_entities)),
                           axes=tuple(weights), weights=weights, schedule=self.schedule,
                           noise_rate=self.noise_rate, seed=seed,
                           knowledge=self.world_knowledge, knowledge_seed=self.world_seed)

    def api_key(self) -> str | None:
        """The endpoints' key from the environment variable ``api_key_env`` names (never the config)."""
        try:
            return key_from_env(self.api_key_env, "rlpt.judge.api_key_env")
        except MissingKeyError as err:
            from rlpt_plugin.config import ConfigError

            raise ConfigError([f"{err}."]) from None

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
        elif needed:
            try:
                key_from_env(self.api_key_env, f"{path}.api_key_env")
            except MissingKeyError as err:
                errors.append(f"{err}.")
        _number(errors, f"{path}.verdict_timeout_s", self.verdict_timeout_s, minimum=0, strictly=True)
        before = len(errors)
        _number(errors, f"{path}.max_unjudged_share", self.max_unjudged_share, minimum=0)
        if len(errors) == before and self.max_unjudged_share > 1:
            errors.append(f"`{path}.max_unjudged_share` must be in [0, 1], but is "
                          f"{self.max_unjudged_share!r} instead.")
        _number(errors, f"{path}.unjudged_window", self.unjudged_window, minimum=1, integer=True)
        return errors
