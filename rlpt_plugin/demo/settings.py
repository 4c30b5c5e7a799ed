"""The knobs of ``rlpt demo`` (each one a ``--flag``), validated together."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields
from typing import Any

from rlpt_plugin.config import ConfigError

LOSSES = ("dpo", "rf_nll", "grpo")
TASKS = ("sip", "reasoning")
AXES = ("quality", "safety", "factuality")

#: What ``None`` means for the fields each task sets its own way (``--flag`` overrides it).
#: Reasoning's world is clean: the SIP demo's defects (a systematic share of wrong majority values,
#: false sentences) make a third of the employer facts the two-hop step needs wrong in the corpus
#: by construction, so a model that learnt its corpus perfectly would still fail the grader.
#: Its base trains longer (the one-hop recall the step builds on) and its continuations at a higher
#: rate: SFT(think) learns a new format (the thought) in its 200 steps. README "Measured" has the
#: runs these came from and the worlds they were checked on.
TASK_DEFAULTS: dict[str, dict[str, float | int]] = {
    "sip": {"systematic_fraction": 0.3, "defect_rate": 0.04, "start_steps": 600, "lr": 3e-4},
    "reasoning": {"systematic_fraction": 0.0, "defect_rate": 0.0, "start_steps": 1500, "lr": 1e-3},
}


@dataclass(frozen=True, kw_only=True)
class DemoSettings:
    task: str = "sip"
    """sip: self-improving against next-token pretraining (safety, factuality, quality) |
    reasoning: thinking mid-training on the world's two-hop facts (base, NTP on raw, SFT(think),
    SFT(think) + RLMT with Dr. GRPO; rlpt_plugin/demo/reasoning.py)."""
    seed: int = 1234
    """Training seed: model initialisation, window order, rollouts (the world is --world-seed's)."""
    world_seed: int = 0
    """Seed of the synthetic world (knowledge base, corpus, held-out prefixes)."""
    entities: int = 100
    """People in the knowledge base."""
    docs_per_entity: int = 8
    """Training biographies per person."""
    systematic_fraction: float | None = None
    """Share of (person, attribute) contexts whose most frequent continuation is bad. Default: the
    task's (TASK_DEFAULTS)."""
    defect_rate: float | None = None
    """Per-sentence rate of EACH defect kind (false / unsafe / degenerate) elsewhere. Default: the
    task's (TASK_DEFAULTS)."""
    start_lr: float = 2e-3
    """Peak learning rate of the start model (cosine decay to a tenth, 30 warm-up steps)."""
    lr: float | None = None
    """Learning rate of every continuation (constant after 20 warm-up steps; Adam restarts). Default:
    the task's (TASK_DEFAULTS)."""
    start_steps: int | None = None
    """Next-token steps that make the start model. Default: the task's (TASK_DEFAULTS)."""
    steps: int = 200
    """Steps of each continuation (baseline and SIP train for the same number)."""
    rollouts: int = 8
    """K: rollouts per prefix in the SIP pool (plus the original suffix)."""
    loss: str = "dpo"
    """SIP update rule: dpo (online DPO, chosen = best, rejected = worst) | rf_nll | grpo (Dr. GRPO
    on the rollouts, against the rollout-time policy; docs/METHOD.md)."""
    judge_noise: float = 0.1
    """Share of the training judge's judgments flipped (an LLM judge errs; evaluation is exact)."""
    teacher_knowledge: float = 0.8
    """Share of the facts the teacher (judge and rewriter) knows; on the others it trusts the
    corpus (1 = the exact oracle; evaluation always uses the full knowledge base)."""
    rewrite_miss: float = 0.1
    """Probability that the teacher's rewrite leaves a defective sentence as it is."""
    rewrite_error: float = 0.02
    """Probability that a value the teacher's rewrite writes is wrong (an introduced error)."""
    beta: float = 0.1
    """DPO temperature."""
    reference: str = "frozen"
    """DPO reference: frozen (the start model) | rollout (the policy that sampled the pool)."""
    chosen_nll: float = 1.0
    """With --loss dpo: weight of the NLL term on the chosen (best) candidate, which keeps DPO
    from pushing the rejected text's common words into degenerate alternatives."""
    lm_weight: float = 1.0
    """Weight of the next-token term on the original text in the SIP loss."""
    suffix_length: int = 16
    """N: tokens per suffix, rollout and evaluated continuation."""
    groups_per_step: int = 16
    """Prefixes (candidate pools) per step."""
    reward: str = "quality,safety,factuality"
    """Judge axes summed into the reward during training (comma-separated, equal weights)."""
    rewrite: bool = True
    """Put the teacher's rewrite of the suffix in the SIP pool (next to the original and the
    rollouts): on a systematic myth neither the corpus nor the model's own samples hold the truth."""
    rollouts_only: bool = False
    """Leave the original suffix (and the rewrite) out of the pool: the model trains on its own text."""
    rf_nll: bool = False
    """Also continue with RF-NLL as the update rule (a fourth column)."""
    controls: bool = False
    """Also train the controls: next-token with SIP's compute (--control-factor x the steps) and
    next-token on the teacher's rewrites ("SFT on rewrites"), both from the start model."""
    threads: int = 1
    """torch intra-op threads (0: torch's default). The tiny model gains nothing from more than
    one, and on a shared 2-core machine two threads per process made every phase about 20x
    slower (a SIP step 25 s instead of 1.6 s; measured, see the README)."""
    thinking_budget: int = 24
    """--task reasoning: thought tokens an RLMT rollout may write before its N-token answer (and
    the evaluation's greedy continuations too). The world's thoughts take 14 tokens; sampled at
    temperature 1 they run longer, and a thought past the budget earns nothing."""
    trained_share: float = 0.4
    """--task reasoning: share of the people whose two-hop facts the SFT half states (with a thought
    in SFT(think), without in NTP (raw)); the more distinct people carry a thought, the more the
    step is learnt as a skill rather than as memorised lines (README "Measured")."""
    rl_share: float = 0.3
    """--task reasoning: share of the people whose two-hop facts only the RL half states (RLMT's
    prefixes); the rest are held out, the graded ones."""
    control_factor: int = 3
    """Steps of the compute-matched next-token control, as a multiple of --steps. 3 matches the
    tokens SIP trains (three rows per prefix: the LM row, chosen and rejected), not its
    wall-clock (a SIP step also samples K rollouts and waits for the judge)."""

    def __post_init__(self) -> None:
        defaults = TASK_DEFAULTS.get(self.task, TASK_DEFAULTS["sip"])  # an unknown task: errors() names it
        for name, value in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def errors(self) -> list[str]:
        out = []
        for name in ("seed", "world_seed"):
            if getattr(self, name) < 0:
                out.append(f"`--{name.replace('_', '-')}` must be >= 0, but is {getattr(self, name)}.")
        for name in ("entities", "docs_per_entity", "start_steps", "steps", "suffix_length", "groups_per_step"):
            if getattr(self, name) < 1:
                out.append(f"`--{name.replace('_', '-')}` must be >= 1, but is {getattr(self, name)}.")
        if self.threads < 0:
            out.append(f"`--threads` must be >= 0, but is {self.threads}.")
        if self.control_factor < 1:
            out.append(f"`--control-factor` must be >= 1, but is {self.control_factor}.")
        if self.rollouts < 1:
            out.append(f"`--rollouts` must be >= 1, but is {self.rollouts}.")
        axes = [a.strip() for a in self.reward.split(",") if a.strip()]
        if not axes or any(a not in AXES for a in axes) or len(set(axes)) != len(axes):
            out.append(f"`--reward` must list distinct axes among {', '.join(AXES)}, but is {self.reward!r}.")
        if self.task not in TASKS:
            out.append(f"`--task` must be one of {', '.join(TASKS)}, but is {self.task!r}.")
        if self.thinking_budget < 2:
            out.append(f"`--thinking-budget` must be >= 2 (the two delimiters), but is {self.thinking_budget}.")
        if not (0 < self.trained_share and 0 < self.rl_share and self.trained_share + self.rl_share < 1):
            out.append(f"`--trained-share` and `--rl-share` must be > 0 with a sum < 1 (some people held out), "
                       f"but are {self.trained_share} and {self.rl_share}.")
        split_defaults = tuple(f.default for f in fields(self) if f.name in ("trained_share", "rl_share"))
        if self.task != "reasoning" and (self.trained_share, self.rl_share) != split_defaults:
            out.append("`--trained-share` / `--rl-share` split the people of the reasoning world: they need "
                       f"`--task reasoning` (the task is {self.task!r}).")
        if self.loss not in LOSSES:
            out.append(f"`--loss` must be one of {', '.join(LOSSES)}, but is {self.loss!r}.")
        if not 0 <= self.judge_noise < 1:
            out.append(f"`--judge-noise` must be in [0, 1), but is {self.judge_noise}.")
        for name in ("teacher_knowledge", "rewrite_miss", "rewrite_error"):
            if not 0 <= getattr(self, name) <= 1:
                out.append(f"`--{name.replace('_', '-')}` must be in [0, 1], but is {getattr(self, name)}.")
        if not 0 <= self.systematic_fraction <= 1:
            out.append(f"`--systematic-fraction` must be in [0, 1], but is {self.systematic_fraction}.")
        if not 0 <= 3 * self.defect_rate <= 1:
            out.append(f"`--defect-rate` must be in [0, 1/3], but is {self.defect_rate}.")
        if self.reference not in ("frozen", "rollout"):
            out.append(f"`--reference` must be frozen or rollout, but is {self.reference!r}.")
        if self.chosen_nll < 0:
            out.append(f"`--chosen-nll` must be >= 0, but is {self.chosen_nll}.")
        for name in ("start_lr", "lr"):
            if getattr(self, name) <= 0:
                out.append(f"`--{name.replace('_', '-')}` must be > 0, but is {getattr(self, name)}.")
        if self.lm_weight < 0:
            out.append(f"`--lm-weight` must be >= 0, but is {self.lm_weight}.")
        if self.beta <= 0:
            out.append(f"`--beta` must be > 0, but is {self.beta}.")
        return out

    def reward_axes(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.reward.split(",") if a.strip())

    def validate(self) -> None:
        errors = self.errors()
        if errors:
            raise ConfigError(errors)


_KINDS = {"int": int, "float": float, "str": str, "bool": lambda v: v.lower() in ("1", "true", "yes")}


def parse_setting(pair: str) -> tuple[str, Any]:
    """``"key=value"`` -> ``(key, value)`` typed as the :class:`DemoSettings` field (bools:
    1/true/yes; ``none`` for a field whose default is the task's). Unknown keys are an error."""
    key, _, raw = pair.partition("=")
    kinds = {f.name: str(f.type) for f in fields(DemoSettings)}
    if key not in kinds:
        raise ValueError(f"unknown demo setting {key!r} (rlpt demo --help lists them)")
    optional = kinds[key].endswith(" | None")  # a task-dependent default
    if optional and raw.lower() == "none":
        return key, None
    return key, _KINDS[kinds[key].removesuffix(" | None")](raw)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per field, help from the field's docstring, defaults shown."""
    docs = _field_docs()
    for f in fields(DemoSettings):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):  # --flag / --no-flag
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default,
                                help=docs.get(f.name, ""))
        else:
            kind = _KINDS[str(f.type).removesuffix(" | None")]
            help = docs.get(f.name, "")
            if f.default is None:  # the task's: say each
                help += " (" + ", ".join(f"{task} {d[f.name]}" for task, d in TASK_DEFAULTS.items()) + ")"
            parser.add_argument(flag, type=kind, default=f.default, help=help)


def from_args(args: argparse.Namespace) -> DemoSettings:
    return DemoSettings(**{f.name: getattr(args, f.name) for f in fields(DemoSettings)})


def _field_docs() -> dict[str, str]:
    """Field name -> its docstring (the string literal after it in the class body)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(DemoSettings))
    body = tree.body[0].body  # type: ignore[attr-defined]
    out = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            out[node.target.id] = " ".join(str(after.value.value).split())  # type: ignore[union-attr]
    return out
