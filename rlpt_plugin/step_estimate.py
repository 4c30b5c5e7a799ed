"""Where a step's time would go on a GPU cluster, from FLOPs and bytes (``rlpt train --dry-run``).

An estimate, not a measurement: it turns the workload plan (rlpt_plugin/plan.py) and the
model's shape into seconds under stated assumptions, so a user sees before launch which phase
dominates a paper-scale step. Pure Python, like the plan.

Model (per optimizer step; P parameters, L layers, hidden h, sequence S, GPUs g, replicas
r = g / (TP x PP)):

* training: ``tokens_trained x (6 P + 6 L S h)`` FLOPs (forward + backward of the dense layers,
  plus causal attention's scores and values), at ``train_mfu`` of the peak (FP8's peak with FP8).
* reference: one forward (``2 P + 2 L S h`` per token) over the RL rows with the frozen
  reference; with the rollout-time reference, over the corpus candidates' rows (they are scored
  when the pool is built); none without a reference.
* rollout prefill: ``prefill_tokens x (2 P + 2 L S h)`` FLOPs at ``prefill_mfu`` of the bf16 peak.
* rollout decode: N steps; each reads the weights once for the replica's whole batch of
  sequences plus their KV cache (2 bytes per value), at ``decode_bw_efficiency`` of the memory
  bandwidth, or the batch's FLOPs at ``prefill_mfu`` when that is slower. Pipeline stages decode
  in turn, so a replica's time is its TP shard of the whole model.
* the judge runs on its own servers, overlapping training (staleness >= 1): reported as the calls
  and prompt tokens per second it must sustain at the estimated step time. Prompt tokens per call
  are counted from the templates' words (1.3 tokens per word, an assumption) plus the prefix and
  candidates in the student's tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rlpt_plugin.plan import WorkloadPlan

TOKENS_PER_TEMPLATE_WORD = 1.3  # typical for English with a 32k-128k BPE vocabulary (assumption)


@dataclass(frozen=True, kw_only=True)
class Accelerator:
    """One GPU's peak rates and the efficiencies assumed for each kind of work."""

    name: str = "H100 SXM"
    bf16_flops: float = 989e12  # dense, NVIDIA's data sheet
    fp8_flops: float = 1979e12  # dense, NVIDIA's data sheet
    hbm_bytes_per_s: float = 3.35e12
    train_mfu: float = 0.40
    prefill_mfu: float = 0.50
    decode_bw_efficiency: float = 0.60


@dataclass(frozen=True, kw_only=True)
class ModelShape:
    """What the cost depends on; ``from_model`` reads it from a megatron/Bridge model config."""

    num_layers: int
    hidden_size: int
    ffn_hidden_size: int
    num_attention_heads: int
    num_query_groups: int
    vocab_size: int
    seq_length: int
    gated_mlp: bool = True
    tied_embeddings: bool = False

    @classmethod
    def from_model(cls, model: Any) -> ModelShape:
        heads = int(model.num_attention_heads)
        return cls(num_layers=int(model.num_layers), hidden_size=int(model.hidden_size),
                   ffn_hidden_size=int(model.ffn_hidden_size or 4 * model.hidden_size),
                   num_attention_heads=heads, num_query_groups=int(getattr(model, "num_query_groups", None) or heads),
                   vocab_size=int(model.vocab_size), seq_length=int(model.seq_length),
                   gated_mlp=bool(getattr(model, "gated_linear_unit", False)),
                   tied_embeddings=bool(getattr(model, "share_embeddings_and_output_weights", False)))

    @property
    def kv_size(self) -> int:
        return self.hidden_size * self.num_query_groups // self.num_attention_heads

    @property
    def num_params(self) -> int:
        h, f = self.hidden_size, self.ffn_hidden_size
        attention = h * (h + 2 * self.kv_size) + h * h
        mlp = (3 if self.gated_mlp else 2) * h * f
        embeddings = self.vocab_size * h * (1 if self.tied_embeddings else 2)
        return self.num_layers * (attention + mlp) + embeddings


@dataclass(frozen=True)
class StepEstimate:
    gpus: int
    replicas: int
    train_s: float
    reference_s: float
    prefill_s: float
    decode_s: float
    judge_calls: int
    judge_prompt_tokens: int

    @property
    def step_s(self) -> float:
        """Everything but the judge (which overlaps the step)."""
        return self.train_s + self.reference_s + self.prefill_s + self.decode_s


def _prompt_overheads() -> dict[str, int]:
    """Tokens of each judge template's own text (placeholders excluded), by axis."""
    from rlpt_plugin.judge.axes import DEFAULT_TEMPLATES
    from rlpt_plugin.teacher.templates import load_template

    out = {}
    for axis, name in DEFAULT_TEMPLATES.items():
        tpl = load_template(name)
        words = sum(len(text.split()) for _, text in tpl.sections)
        out[str(getattr(axis, "value", axis))] = round(words * TOKENS_PER_TEMPLATE_WORD)
    return out


def judge_prompt_tokens(plan: WorkloadPlan) -> int:
    """Prompt tokens of one step's judge calls (upper bound: full-length prefixes)."""
    inp, overhead = plan.inputs, _prompt_overheads()
    prefix, n = inp.seq_length + 1 - inp.suffix_length, inp.suffix_length
    per_call = {"quality": overhead["quality"] + prefix + 2 * n, "safety": overhead["safety"] + n,
                "factuality": overhead["factuality"] + prefix + 2 * n,
                "similarity": overhead["similarity"] + prefix + 2 * n}
    return sum(a.per_step * per_call[a.name] for a in plan.axes)


def estimate(plan: WorkloadPlan, shape: ModelShape, *, gpus: int, tensor_parallel: int = 1,
             pipeline_parallel: int = 1, fp8: bool = False, reference: str = "rollout",
             accelerator: Accelerator = Accelerator()) -> StepEstimate:
    """The step's split on ``gpus`` accelerators (see the module docstring for the model)."""
    mp = tensor_parallel * pipeline_parallel
    if gpus < 1 or gpus % mp:
        raise ValueError(f"gpus must be a positive multiple of TP x PP = {mp}, got {gpus}")
    a, inp = accelerator, plan.inputs
    p, l_h_s = shape.num_params, shape.num_layers * shape.hidden_size * shape.seq_length
    forward_per_token = 2 * p + 2 * l_h_s
    train_peak = (a.fp8_flops if fp8 else a.bf16_flops) * a.train_mfu * gpus
    train_s = plan.tokens_trained * (6 * p + 6 * l_h_s) / train_peak
    if reference == "frozen":
        ref_tokens = plan.rl_rows * inp.seq_length
    elif reference == "rollout" and inp.in_loop and plan.rollouts:
        ref_tokens = inp.groups_per_step * inp.pool_corpus * inp.seq_length
    else:
        ref_tokens = 0
    reference_s = ref_tokens * forward_per_token / train_peak
    prefill_s = plan.prefill_tokens * forward_per_token / (a.bf16_flops * a.prefill_mfu * gpus)
    replicas = gpus // mp
    decode_s = 0.0
    if plan.rollouts:
        batch = plan.rollouts / replicas  # sequences decoded together by one replica
        context = inp.seq_length  # the longest a sequence's KV cache gets
        weight_bytes = 2 * p / tensor_parallel
        kv_bytes = batch * context * 2 * shape.num_layers * shape.kv_size * 2 / tensor_parallel
        memory_s = (weight_bytes + kv_bytes) / (a.hbm_bytes_per_s * a.decode_bw_efficiency)
        compute_s = batch * forward_per_token / tensor_parallel / (a.bf16_flops * a.prefill_mfu)
        decode_s = inp.suffix_length * max(memory_s, compute_s)
    return StepEstimate(gpus=gpus, replicas=replicas, train_s=train_s, reference_s=reference_s,
                        prefill_s=prefill_s, decode_s=decode_s, judge_calls=plan.judge_calls,
                        judge_prompt_tokens=judge_prompt_tokens(plan) if plan.judge_calls else 0)


def format_estimate(e: StepEstimate, shape: ModelShape, accelerator: Accelerator = Accelerator()) -> str:
    a = accelerator
    total = e.step_s or float("inf")

    def row(label: str, seconds: float) -> str:
        return f"  {label:<16} {seconds:9.2f} s  ({100 * seconds / total:4.1f}%)"

    lines = [
        f"estimated step on {e.gpus} x {a.name} ({shape.num_params / 1e9:.2f}B parameters, {e.replicas} "
        f"model replica(s)); assumed: dense bf16 {a.bf16_flops / 1e12:,.0f} / FP8 {a.fp8_flops / 1e12:,.0f} "
        f"TFLOP/s, HBM {a.hbm_bytes_per_s / 1e12:.2f} TB/s, MFU {a.train_mfu:.0%} training and "
        f"{a.prefill_mfu:.0%} prefill, {a.decode_bw_efficiency:.0%} of HBM bandwidth in decode:",
        row("training", e.train_s), row("reference", e.reference_s), row("rollout prefill", e.prefill_s),
        row("rollout decode", e.decode_s),
        f"  {'step (no judge)':<16} {e.step_s:9.2f} s",
    ]
    if e.judge_calls:
        lines.append(f"  judge            {e.judge_calls:,} calls, {e.judge_prompt_tokens:,} prompt tokens per step: "
                     f"{e.judge_calls / total:,.0f} calls/s and {e.judge_prompt_tokens / total:,.0f} prompt "
                     "tokens/s to keep pace (on its own servers)")
    return "\n".join(lines)
