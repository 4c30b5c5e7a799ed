"""The ``rlpt`` config section: typed, documented, validated with every error reported at once.

Attached to a Megatron-Bridge ``ConfigContainer`` (see rlpt_plugin/megatron/host/bridge_host.py) and
overridable with Bridge's Hydra syntax, e.g. ``rlpt.loss.beta=0.05 rlpt.loss.dpo.start=0.5``.
No megatron imports: the cross-checks against the host config live in the host adapter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rlpt_plugin.config_checks import _choice, _number
from rlpt_plugin.config_judge import JudgeSection
from rlpt_plugin.config_renames import renamed
from rlpt_plugin.rl.candidates import PoolSpec
from rlpt_plugin.rl.losses import LossConfig
from rlpt_plugin.rl.pool import FALLBACK_RF_NLL_ON_ORIGINAL, RULES
from rlpt_plugin.rl.thinking import ThinkingSpec
from rlpt_plugin.rl.weights import MixedWeights, WeightSchedule

REFERENCE_MODES = ("rollout", "frozen", "none")
SOURCES = ("synthetic", "store")
PREFIX_SHARING = ("auto", "shared", "unpacked")


class ConfigError(ValueError):
    """Every problem found in a config, one per line, each naming field, constraint and value."""

    def __init__(self, errors: list[str]):
        self.errors = list(errors)
        super().__init__("invalid rlpt configuration:\n  - " + "\n  - ".join(self.errors))


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
    grpo: TermWeight = field(default_factory=lambda: TermWeight(start=0.0))
    """Dr. GRPO on the pool's rollouts (rlpt_plugin/rl/grpo.py), per rollout token; needs
    selection=grpo, reference=rollout and >= 2 rollouts per pool."""
    beta: float = 0.1
    """DPO temperature (> 0). The paper leaves it open; 0.1 is common for online DPO."""
    dpo_reduction: str = "sum"
    """sum | mean: a candidate's sequence log-prob is the sum (default) or mean of its tokens."""
    reference: str = "rollout"
    """rollout (default) | frozen | none. rollout: the policy at the time the candidates were
    built, a moving anchor suited to long pretraining and free for rollouts; frozen: a copy of
    the start weights (classic DPO, one more forward and weight copy); none: reference-free."""
    grpo_clip: float = 0.2
    """Dr. GRPO's PPO clip epsilon in (0, 1) on the ratio to the rollout-time policy."""
    selection: str = "dpo"
    """dpo (chosen = best, rejected = worst, plus best for RF-NLL) | rf_nll (best only) |
    grpo (every rollout with its advantage: reward minus the mean reward of the pool's rollouts)."""
    check_values: bool = True
    """Check masks and log-probs for NaN/inf and empty suffixes every micro-batch."""

    def has_rl_terms(self) -> bool:
        """Whether DPO, RF-NLL or Dr. GRPO ever has a non-zero weight. Without one the run is plain
        next-token training: no candidate stage, no judge, no RL rows (``source=store`` then
        trains on prefix + original suffix of the store's windows, the baseline of the method)."""
        return any(w.start or w.end for w in (self.dpo, self.rf_nll, self.grpo))

    def weights(self) -> MixedWeights:
        return MixedWeights(lm=self.lm.build(), dpo=self.dpo.build(), rf_nll=self.rf_nll.build(),
                            grpo=self.grpo.build())

    def loss_config(self) -> LossConfig:
        return LossConfig(beta=self.beta, dpo_reduction=self.dpo_reduction, grpo_clip=self.grpo_clip)

    def validate(self, path: str) -> list[str]:
        errors: list[str] = []
        for name in ("lm", "dpo", "rf_nll", "grpo"):
            errors += getattr(self, name).validate(f"{path}.{name}")
        _number(errors, f"{path}.beta", self.beta, minimum=0, strictly=True)
        before = len(errors)
        _number(errors, f"{path}.grpo_clip", self.grpo_clip, minimum=0, strictly=True)
        if len(errors) == before and self.grpo_clip >= 1:
            errors.append(f"`{path}.grpo_clip` must be in (0, 1), but is {self.grpo_clip!r} instead.")
        _choice(errors, f"{path}.dpo_reduction", self.dpo_reduction, ("sum", "mean"))
        _choice(errors, f"{path}.reference", self.reference, REFERENCE_MODES)
        _choice(errors, f"{path}.selection", self.selection, RULES)
        if self.selection == "rf_nll" and (self.dpo.start or self.dpo.end):
            errors.append(f"`{path}.selection` is 'rf_nll' (no DPO pairs), but `{path}.dpo` has a "
                          "non-zero weight: set rlpt.loss.dpo.start=0 or selection=dpo.")
        errors += self._grpo_errors(path)
        return errors

    def _grpo_errors(self, path: str) -> list[str]:
        grpo_on = bool(self.grpo.start or self.grpo.end)
        errors = []
        if grpo_on and self.selection != "grpo":
            errors.append(f"`{path}.grpo` has a non-zero weight, but `{path}.selection` is "
                          f"{self.selection!r}, which makes no GRPO items: set {path}.selection=grpo.")
        if self.selection == "grpo":
            for name in ("dpo", "rf_nll"):
                if getattr(self, name).start or getattr(self, name).end:
                    errors.append(f"`{path}.selection` is 'grpo' (no DPO pair, no best candidate), but "
                                  f"`{path}.{name}` has a non-zero weight: set {path}.{name}.start=0.")
        if grpo_on and self.reference != "rollout":
            errors.append(f"`{path}.reference` is {self.reference!r}, but Dr. GRPO's importance ratio "
                          "needs the log-probs the rollouts were sampled with (reference=rollout); a "
                          f"{self.reference} reference is not the sampling policy. Set {path}.reference=rollout.")
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

    def pool_spec(self) -> PoolSpec:
        """Which candidates a pool holds (rlpt_plugin/rl/candidates.py)."""
        return PoolSpec(original=self.original, rewrite=self.rewrite, rollouts=self.rollouts and self.num_rollouts > 0)

    def thinking_spec(self, tokenizer: Any, suffix_length: int) -> ThinkingSpec | None:
        """The thinking rollouts (rlpt_plugin/rl/thinking.py), the delimiters encoded with
        ``tokenizer``; None when ``thinking_budget`` is 0."""
        if not self.thinking_budget:
            return None
        try:
            return ThinkingSpec(open_ids=tuple(tokenizer.encode(self.think_open)),
                                close_ids=tuple(tokenizer.encode(self.think_close)),
                                budget=self.thinking_budget, answer_length=suffix_length)
        except ValueError as err:
            raise ConfigError([f"`rlpt.candidates.thinking_budget` / think_open / think_close: {err} "
                               f"(tokenizer {getattr(tokenizer, 'name', tokenizer)!r})"]) from None

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
    lm_on_window: bool = True
    """Train the LM term on every group's whole window (prefix + the corpus's own suffix), whether
    or not that suffix is also a candidate of the pool (``rlpt.candidates.original``). Formerly
    ``lm_on_original`` (still accepted, with a warning: rlpt_plugin/config_renames.py)."""
    job_sequences_per_step: int = 0
    """Sequences of the job's own pretraining data (the ``dataset`` it had before with_rlpt, kept
    as ``dataset.job_data``) per optimizer step over ALL data-parallel ranks, trained by the LM
    term next to the groups' rows; 0: none. Each is one ``model.seq_length`` sample of Megatron's
    own dataset (its blend, split, seed and loss mask)."""
    think_stores: list[str] = field(default_factory=list)
    """Think stores (``rlpt rewrite --task think``: thought-augmented chunks), blended by size, for
    thinking SFT: ``think_sequences_per_step`` of their chunks per step are trained by the LM term
    on every token, original and thought (rlpt_plugin/megatron/data/think_dataset.py). Blends with the
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

    @property
    def lm_on_original(self) -> bool:
        """The former name of :attr:`lm_on_window`."""
        renamed("rlpt.data.lm_on_original", "rlpt.data.lm_on_window")
        return self.lm_on_window

    @lm_on_original.setter
    def lm_on_original(self, value: bool) -> None:
        renamed("rlpt.data.lm_on_original", "rlpt.data.lm_on_window")
        self.lm_on_window = value

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
        for name, what in (("job_sequences_per_step", "the job's own data"),
                           ("think_sequences_per_step", "the think stores' chunks")):
            value = getattr(self.data, name)
            if value and not (self.loss.lm.start or self.loss.lm.end):
                errors.append(f"`rlpt.data.{name}` is {value}, but `rlpt.loss.lm` has weight 0 throughout: "
                              f"{what} would be packed and never trained on. Give rlpt.loss.lm a weight or "
                              f"set {name} to 0.")
        return errors

    def _silent_no_op_errors(self, in_loop: bool) -> list[str]:
        """Settings that would be accepted and then do nothing."""
        errors: list[str] = []
        loss, data, judge = self.loss, self.data, self.judge
        if judge.fallback == FALLBACK_RF_NLL_ON_ORIGINAL and in_loop:
            if not self.candidates.original:
                errors.append("`rlpt.judge.fallback` is 'rf_nll_on_original' (an unjudged pool trains RF-NLL "
                              "on its original suffix), but `rlpt.candidates.original` is False: the "
                              "original is not in the pool. Use fallback=drop or put the original in.")
            if not (loss.rf_nll.start or loss.rf_nll.end):
                errors.append("`rlpt.judge.fallback` is 'rf_nll_on_original' (an unjudged pool trains RF-NLL "
                              "on its original suffix), but `rlpt.loss.rf_nll` has weight 0 throughout, "
                              "so it would do exactly what 'drop' does. Give rlpt.loss.rf_nll a weight "
                              "or use fallback=drop.")
        lm_weighted = bool(loss.lm.start or loss.lm.end)
        extra_rows = data.job_sequences_per_step > 0 or data.think_sequences_per_step > 0
        lm_sources = data.lm_on_window or extra_rows
        if data.source == "synthetic" and not data.synthetic.include_original:
            lm_sources = extra_rows
        if lm_weighted and not lm_sources:
            errors.append("`rlpt.loss.lm` has a non-zero weight, but nothing feeds the LM term: "
                          "`rlpt.data.lm_on_window` is False (or the synthetic groups have no "
                          "original) and `rlpt.data.job_sequences_per_step` and "
                          "`rlpt.data.think_sequences_per_step` are 0. Set rlpt.loss.lm.start=0 or give it data.")
        if (loss.grpo.start or loss.grpo.end) and loss.selection == "grpo":
            rollouts, field_path = ((self.candidates.num_rollouts if self.candidates.rollouts else 0,
                                     "rlpt.candidates.num_rollouts") if data.source == "store" else
                                    (data.synthetic.num_rollouts, "rlpt.data.synthetic.num_rollouts"))
            if isinstance(rollouts, int) and rollouts < 2:
                errors.append(f"`rlpt.loss.grpo` has a non-zero weight, but each pool has {rollouts} "
                              f"rollout(s) (`{field_path}`, rlpt.candidates.rollouts): Dr. GRPO's "
                              "baseline is the mean over a pool's rollouts, so with fewer than 2 every "
                              "pool would be skipped. Give it >= 2 rollouts.")
        if not loss.has_rl_terms() and not lm_weighted:
            errors.append("every loss term has weight 0 throughout (`rlpt.loss.lm`, `.dpo`, "
                          "`.rf_nll`, `.grpo`): the run would train nothing.")
        return errors

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise ConfigError(errors)
