"""K rollouts per prefix from the live policy: a lean sampler over megatron-core's GPTModel.

- KV cache: megatron's ``StaticInferenceContext``; ``use_kv_cache=False`` recomputes the whole
  sequence every step (the reference the cached path is tested against).
- Shared KV (default where exact, :mod:`.shared_kv`): each prefix is prefilled ONCE and its KV
  entries are kept once for its K rollouts; every row caches only the tokens it feeds itself,
  and keys are cached after RoPE. Elsewhere (``shared_kv=False``, or a model the shared path does
  not serve, :func:`~.shared_kv.unsupported`) megatron's ``StaticInferenceContext``:
- Shared prefill: each prefix is prefilled ONCE, then its cache rows are copied to its K
  rollout rows. All rows of a static batch share one sequence offset, so the shared part is the
  batch's shortest prefix; longer prefixes feed their remaining tokens one step at a time (forced,
  not sampled) and start sampling at their own end.
- Length buckets: prefixes whose lengths differ by N or more run as separate static batches
  (:func:`length_buckets`), so a batch never spends more forced one-token steps than it samples:
  without them, one short prefix among long ones (store windows cut documents anywhere) makes
  every row wait through the whole length difference, one decode step per token.
- Tensor parallelism: logits are gathered over the vocabulary shards (``runtime_gather_output``),
  identical on every TP rank, and the sampling generator is seeded from (seed, step, data-parallel
  rank, position) -- never the TP rank -- so every rank of a TP group draws the same tokens.
- Pipeline parallelism: stages pass activations point to point; the last stage samples and
  broadcasts the tokens to every stage, so all stages run the same number of steps.
- Recorded log-probs are the policy's at temperature 1 over the full (padded) vocabulary, the
  quantity the training forward computes, for the rollout-time reference mode. Sampling itself
  uses ``temperature`` and ``top_p`` and never emits padded vocabulary ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
from megatron.core.inference.contexts import StaticInferenceContext
from megatron.core.utils import get_attr_wrapped_model

from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.candidates.shared_kv import SharedKV, unsupported
from rlpt_plugin.megatron.step.forward_step import causal_attention_mask, model_device


@dataclass(frozen=True, kw_only=True)
class RolloutSpec:
    num_samples: int            # K rollouts per prefix
    max_new_tokens: int         # N
    vocab_size: int             # real vocabulary (ids >= this are padding, never sampled)
    temperature: float = 1.0    # paper: 1.0; 0 = greedy (argmax, evaluation)
    top_p: float = 1.0          # paper: 1.0
    eos_id: int | None = None   # a sampled EOS ends the rollout (EOS included)
    seed: int = 0
    share_prefill: bool = True
    use_kv_cache: bool = True
    length_buckets: bool = True  # False: all prefixes in one static batch
    shared_kv: bool = True      # with the KV cache and shared prefill: K rollouts read one prefix copy

    def __post_init__(self) -> None:
        errors = []
        if self.num_samples < 1:
            errors.append(f"`num_samples` must be >= 1, but is {self.num_samples}")
        if self.max_new_tokens < 1:
            errors.append(f"`max_new_tokens` must be >= 1, but is {self.max_new_tokens}")
        if not self.temperature >= 0:
            errors.append(f"`temperature` must be >= 0 (0: greedy), but is {self.temperature}")
        if not 0 < self.top_p <= 1:
            errors.append(f"`top_p` must be in (0, 1], but is {self.top_p}")
        if errors:
            raise ValueError("RolloutSpec: " + "; ".join(errors))


@dataclass
class Rollouts:
    """``tokens[b][k]`` and ``logps[b][k]``: rollout k of prefix b (<= N tokens)."""

    tokens: list[list[list[int]]]
    logps: list[list[list[float]]]
    forward_tokens: int  # tokens pushed through the model (prefill + decode), for throughput
    kv_cache_bytes: int = 0  # the largest static batch's KV cache (this stage's layers)
    kv_bytes_per_prefix: float = 0.0  # the most any static batch held per prefix (its K rows included)
    kv_path: str = ""  # "shared" | "megatron" (the static inference context) | "recompute"


def length_buckets(lengths: Sequence[int], n: int) -> list[list[int]]:
    """Prefix indices in static batches: taken by length, a prefix joins the current batch while
    it is less than ``n`` tokens longer than the batch's shortest (then it wastes fewer forced
    steps than a batch of its own would sample). Each batch keeps the prefixes' original order."""
    buckets: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda j: (lengths[j], j)):
        if buckets and lengths[i] - lengths[buckets[-1][0]] < n:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return [sorted(b) for b in buckets]


def _generator(spec: RolloutSpec, step: int, dp_rank: int, position: int, device: torch.device,
               bucket: int = 0) -> torch.Generator:
    # bucket 0 keeps the stream of a single static batch: one bucket samples what no buckets did
    key = f"{spec.seed}:{step}:{dp_rank}:{position}" + (f":{bucket}" if bucket else "")
    digest = hashlib.sha256(key.encode()).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(digest[:8], "little"))


def _sample(logits_RV: torch.Tensor, spec: RolloutSpec, gen: torch.Generator) -> torch.Tensor:
    if spec.temperature == 0:
        return logits_RV[:, : spec.vocab_size].argmax(dim=-1)
    logits_RV = logits_RV[:, : spec.vocab_size].float() / spec.temperature
    probs_RV = torch.softmax(logits_RV, dim=-1)
    if spec.top_p < 1.0:
        sorted_p, order = probs_RV.sort(dim=-1, descending=True)
        # Keep the smallest prefix of the sorted distribution whose mass reaches top_p.
        keep = (sorted_p.cumsum(dim=-1) - sorted_p) < spec.top_p
        sorted_p = torch.where(keep, sorted_p, torch.zeros_like(sorted_p))
        probs_RV = torch.zeros_like(probs_RV).scatter(-1, order, sorted_p)
    return torch.multinomial(probs_RV, 1, generator=gen).squeeze(-1)


class _Runner:
    """One forward over all stages; returns last-position logits on the last stage, else None."""

    def __init__(self, model: torch.nn.Module, context: StaticInferenceContext | None,
                 shared: SharedKV | None = None):
        self.model = model
        self.context = context
        self.shared = shared
        self.device = model_device(model)
        self.lay = parallel.layout()
        self.hidden = get_attr_wrapped_model(model, "config").hidden_size
        self.dtype = next(model.parameters()).dtype
        self.set_input_tensor = get_attr_wrapped_model(model, "set_input_tensor")

    def __call__(self, tokens_RS: torch.Tensor, start: int) -> torch.Tensor | None:
        rows, seq = tokens_RS.shape
        if not self.lay.is_first_stage:
            self.set_input_tensor(parallel.pp_recv_from_prev((seq, rows, self.hidden), self.dtype, self.device))
        positions = torch.arange(start, start + seq, device=self.device).expand(rows, seq)
        mask = causal_attention_mask(seq, self.device) if seq > 1 else None
        if self.shared is not None:
            self.shared.start = start
        out = self.model(tokens_RS.to(self.device), positions, mask, inference_context=self.context,
                         runtime_gather_output=True)
        if self.context is not None:
            self.context.increment_sequence_len_offset(seq)
        if not self.lay.is_last_stage:
            parallel.pp_send_to_next(out)
            return None
        return out[:, -1, :]


def _expand_cache(context: StaticInferenceContext, num_prefixes: int, k: int) -> None:
    """Copy each prefix's cache row to its K rollout rows (rows are prefix-major)."""
    index = torch.arange(num_prefixes).repeat_interleave(k)
    for layer, (keys, values) in list(context.key_value_memory_dict.items()):
        idx = index.to(keys.device)
        context.key_value_memory_dict[layer] = (keys[:, idx].contiguous(), values[:, idx].contiguous())


@torch.no_grad()
def generate_rollouts(model: torch.nn.Module, prefixes: Sequence[Sequence[int]], spec: RolloutSpec,
                      *, step: int) -> Rollouts:
    """K rollouts for every prefix of this data-parallel rank (collective over TP and PP)."""
    if not prefixes or any(len(p) == 0 for p in prefixes):
        raise ValueError("every prefix must have at least one token")
    was_training = model.training
    model.eval()
    try:
        return _generate(model, [list(p) for p in prefixes], spec, step)
    finally:
        model.train(was_training)


def _generate(model: torch.nn.Module, prefixes: list[list[int]], spec: RolloutSpec, step: int) -> Rollouts:
    shared = spec.use_kv_cache and spec.share_prefill and spec.shared_kv and unsupported(model) is None
    if not spec.length_buckets:
        return _generate_batch(model, prefixes, spec, step, bucket=0, shared_kv=shared)
    tokens: list[list[list[int]]] = [[] for _ in prefixes]
    logps: list[list[list[float]]] = [[] for _ in prefixes]
    forward_tokens, kv_bytes, per_prefix, path = 0, 0, 0.0, ""
    for b, members in enumerate(length_buckets([len(p) for p in prefixes], spec.max_new_tokens)):
        out = _generate_batch(model, [prefixes[i] for i in members], spec, step, bucket=b, shared_kv=shared)
        for i, toks, lps in zip(members, out.tokens, out.logps):
            tokens[i], logps[i] = toks, lps
        forward_tokens += out.forward_tokens
        kv_bytes, path = max(kv_bytes, out.kv_cache_bytes), out.kv_path
        per_prefix = max(per_prefix, out.kv_bytes_per_prefix)
    return Rollouts(tokens=tokens, logps=logps, forward_tokens=forward_tokens, kv_cache_bytes=kv_bytes,
                    kv_bytes_per_prefix=per_prefix, kv_path=path)


def _generate_batch(model: torch.nn.Module, prefixes: list[list[int]], spec: RolloutSpec, step: int,
                    bucket: int, shared_kv: bool) -> Rollouts:
    """One static batch: every prefix's K rollouts, the rows sharing one sequence offset.
    ``shared_kv``: the shared-KV decode serves this model (decided once per call)."""
    rows = len(prefixes) * spec.num_samples
    shortest, total = min(map(len, prefixes)), max(map(len, prefixes)) + spec.max_new_tokens
    context = StaticInferenceContext(rows, total) if spec.use_kv_cache else None
    if not shared_kv:
        return _decode(_Runner(model, context), prefixes, spec, step, bucket, None)
    shared = SharedKV(len(prefixes), spec.num_samples, max_own=total - shortest)
    with shared.installed(model):
        return _decode(_Runner(model, context, shared), prefixes, spec, step, bucket, shared)


def _decode(run: _Runner, prefixes: list[list[int]], spec: RolloutSpec, step: int, bucket: int,
            shared: SharedKV | None) -> Rollouts:
    k, n = spec.num_samples, spec.max_new_tokens
    num_prefixes, context = len(prefixes), run.context
    rows = num_prefixes * k
    lengths = torch.tensor([len(prefixes[r // k]) for r in range(rows)])
    shortest, longest = int(lengths.min()), int(lengths.max())
    total = longest + n
    # Every row's full token stream: the prefix, then sampled tokens.
    stream_RT = torch.zeros(rows, total, dtype=torch.long)
    for r in range(rows):
        stream_RT[r, : lengths[r]] = torch.tensor(prefixes[r // k])
    logps_RT = torch.zeros(rows, total)
    finished_R = torch.zeros(rows, dtype=torch.bool)
    forward_tokens = 0
    dp_rank = run.lay.dp_rank

    if spec.use_kv_cache and spec.share_prefill:
        prefill = torch.tensor([p[:shortest] for p in prefixes])
        logits = run(prefill, 0)
        if shared is None:
            _expand_cache(context, num_prefixes, k)
        context.max_batch_size = rows
        if logits is not None:
            logits = logits.repeat_interleave(k, dim=0)
        forward_tokens += num_prefixes * shortest
    else:
        logits = run(stream_RT[:, :shortest], 0)
        forward_tokens += rows * shortest
    position = shortest  # the position whose token the current logits predict
    while True:
        new_R = torch.zeros(rows, dtype=torch.long)
        done = torch.zeros(1, dtype=torch.long)
        if logits is not None:  # last stage: sample position `position` for rows past their prefix
            gen = _generator(spec, step, dp_rank, position, logits.device, bucket)
            sampled = _sample(logits, spec, gen).cpu()
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, sampled.to(logits.device)[:, None])
            generating = (lengths <= position) & ~finished_R
            new_R = torch.where(generating, sampled, stream_RT[:, position])
            logps_RT[:, position] = torch.where(generating, logp.squeeze(1).cpu(), torch.zeros(rows))
            is_eos = generating & (sampled == spec.eos_id) if spec.eos_id is not None else torch.zeros_like(generating)
            finished_R |= is_eos | (position + 1 - lengths >= n)
            done[0] = int(bool(finished_R.all()))
        new_R = parallel.pp_broadcast_from_last(new_R.to(run.device)).cpu()
        done = parallel.pp_broadcast_from_last(done.to(run.device)).cpu()
        stream_RT[:, position] = new_R
        if bool(done[0]) or position + 1 >= total:
            break
        if spec.use_kv_cache:
            logits = run(stream_RT[:, position: position + 1], position)
            forward_tokens += rows
        else:
            logits = run(stream_RT[:, : position + 1], 0)
            forward_tokens += rows * (position + 1)
        position += 1
    out = _collect(stream_RT, logps_RT, lengths, prefixes, spec, forward_tokens)
    if shared is not None:
        out.kv_cache_bytes, out.kv_path = shared.bytes(), "shared"
    elif context is not None:
        out.kv_cache_bytes = sum(t.numel() * t.element_size() for kv in context.key_value_memory_dict.values() for t in kv)
        out.kv_path = "megatron"
    else:
        out.kv_path = "recompute"
    out.kv_bytes_per_prefix = out.kv_cache_bytes / num_prefixes
    return out


def _collect(stream_RT: torch.Tensor, logps_RT: torch.Tensor, lengths: torch.Tensor,
             prefixes: list[list[int]], spec: RolloutSpec, forward_tokens: int) -> Rollouts:
    k, n = spec.num_samples, spec.max_new_tokens
    tokens: list[list[list[int]]] = [[] for _ in prefixes]
    logps: list[list[list[float]]] = [[] for _ in prefixes]
    for r in range(stream_RT.shape[0]):
        start = int(lengths[r])
        toks = stream_RT[r, start: start + n].tolist()
        if spec.eos_id is not None and spec.eos_id in toks:
            toks = toks[: toks.index(spec.eos_id) + 1]
        tokens[r // k].append(toks)
        logps[r // k].append(logps_RT[r, start: start + len(toks)].tolist())
    return Rollouts(tokens=tokens, logps=logps, forward_tokens=forward_tokens)
