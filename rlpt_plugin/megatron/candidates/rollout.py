"""K rollouts per prefix from the live policy: a lean sampler over megatron-core's GPTModel.

- Shared KV (default where exact, :mod:`.shared_kv`): all prefixes of a static batch are
  prefilled ONCE, left-padded to the longest, and each prefix's KV entries are kept once for its K
  rollouts; every row caches only the tokens it samples, keys after RoPE, each token at its own
  position, so a static batch runs one prefill and N decode steps whatever its prefix lengths.
- Elsewhere (``shared_kv=False``, or a model the shared path does not serve,
  :func:`~.shared_kv.unsupported`) megatron's ``StaticInferenceContext``: each prefix's shortest
  common part is prefilled once and its cache rows copied to its K rollout rows; all rows share
  one sequence offset, so longer prefixes feed their remaining tokens one step at a time (forced,
  not sampled) and start sampling at their own end. ``use_kv_cache=False`` recomputes the whole
  sequence every step (the reference the cached paths are tested against).
- Length buckets: prefixes whose lengths differ by N or more (shared KV: K x N or more, the
  tokens a batch of their own would decode) run as separate static batches
  (:func:`length_buckets`), so a batch never spends more forced steps (padded prefill positions)
  than it samples: store windows cut documents anywhere.
- Sampling: inverse transform on the (temperature, top-p) distribution with uniforms drawn per
  prefix from (seed, step, data-parallel rank, the prefix's index) -- never the TP rank, nor the
  batch or KV path -- so every rank of a TP group, every KV path and every bucketing draws the same
  tokens. Logits are gathered over the vocabulary shards (``runtime_gather_output``).
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


def _uniforms(spec: RolloutSpec, step: int, dp_rank: int, prefix: int) -> torch.Tensor:
    """``[K, N]`` float64 uniforms: row k of prefix ``prefix`` (its index in this rank's call)
    samples its j-th token with ``[k, j]``. Drawn on the CPU from a generator seeded by (seed,
    step, data-parallel rank, prefix) -- never the TP rank, nor the static batch the prefix runs
    in -- so every TP rank, every KV path and every bucketing draws the same tokens."""
    digest = hashlib.sha256(f"{spec.seed}:{step}:{dp_rank}:{prefix}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))
    return torch.rand(spec.num_samples, spec.max_new_tokens, generator=gen, dtype=torch.float64)


def _sample(logits_RV: torch.Tensor, spec: RolloutSpec, u_R: torch.Tensor) -> torch.Tensor:
    """One token per row by inverse transform: the first id whose cumulative probability exceeds
    ``u * total`` (about 20x cheaper than ``torch.multinomial`` on a CPU at the demo's shapes)."""
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
    cdf_RV = probs_RV.double().cumsum(dim=-1)
    target_R1 = u_R.to(cdf_RV.device)[:, None] * cdf_RV[:, -1:]
    sampled = torch.searchsorted(cdf_RV, target_R1, right=True).squeeze(-1)  # skips zero-mass ids
    # Rounding can put the target at the total: clamp to the last id with mass.
    last = spec.vocab_size - 1 - (probs_RV > 0).flip(-1).to(torch.int8).argmax(dim=-1)
    return torch.minimum(sampled, last)


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

    def __call__(self, tokens_RS: torch.Tensor, start: int, positions_RS: torch.Tensor | None = None,
                 slot: int = 0) -> torch.Tensor | None:
        """``start``: the static context's offset; ``positions_RS`` (shared KV): each token's own
        position (default: ``start`` onwards in every row); ``slot``: the shared decode's own-entry index."""
        rows, seq = tokens_RS.shape
        if not self.lay.is_first_stage:
            self.set_input_tensor(parallel.pp_recv_from_prev((seq, rows, self.hidden), self.dtype, self.device))
        if positions_RS is None:
            positions_RS = torch.arange(start, start + seq).expand(rows, seq)
        positions = positions_RS.to(self.device)
        mask = causal_attention_mask(seq, self.device) if seq > 1 else None
        if self.shared is not None:
            self.shared.positions, self.shared.slot = positions, slot
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
    dp_rank = parallel.layout().dp_rank
    uniforms = [_uniforms(spec, step, dp_rank, i) for i in range(len(prefixes))]
    if not spec.length_buckets:
        return _generate_batch(model, prefixes, spec, uniforms, shared_kv=shared)
    tokens: list[list[list[int]]] = [[] for _ in prefixes]
    logps: list[list[list[float]]] = [[] for _ in prefixes]
    forward_tokens, kv_bytes, per_prefix, path = 0, 0, 0.0, ""
    # Shared KV pays for a length difference with padded prefill positions of that prefix only,
    # megatron's static context with one forced decode step of every row per token of it.
    spread = spec.num_samples * spec.max_new_tokens if shared else spec.max_new_tokens
    for members in length_buckets([len(p) for p in prefixes], spread):
        out = _generate_batch(model, [prefixes[i] for i in members], spec, [uniforms[i] for i in members],
                              shared_kv=shared)
        for i, toks, lps in zip(members, out.tokens, out.logps):
            tokens[i], logps[i] = toks, lps
        forward_tokens += out.forward_tokens
        kv_bytes, path = max(kv_bytes, out.kv_cache_bytes), out.kv_path
        per_prefix = max(per_prefix, out.kv_bytes_per_prefix)
    return Rollouts(tokens=tokens, logps=logps, forward_tokens=forward_tokens, kv_cache_bytes=kv_bytes,
                    kv_bytes_per_prefix=per_prefix, kv_path=path)


def _generate_batch(model: torch.nn.Module, prefixes: list[list[int]], spec: RolloutSpec,
                    uniforms: list[torch.Tensor], shared_kv: bool) -> Rollouts:
    """One static batch: every prefix's K rollouts. ``uniforms``: each prefix's ``[K, N]`` draws;
    ``shared_kv``: the shared-KV decode serves this model (decided once per call)."""
    rows = len(prefixes) * spec.num_samples
    longest = max(map(len, prefixes))
    u_RN = torch.cat(uniforms)
    if not shared_kv:
        context = StaticInferenceContext(rows, longest + spec.max_new_tokens) if spec.use_kv_cache else None
        return _decode(_Runner(model, context), prefixes, spec, u_RN)
    # The static context only sizes megatron's RoPE table here (every position up to the end).
    context = StaticInferenceContext(rows, longest + spec.max_new_tokens)
    pad = torch.tensor([longest - len(p) for p in prefixes])
    shared = SharedKV(len(prefixes), spec.num_samples, max_own=spec.max_new_tokens, pad=pad)
    with shared.installed(model):
        return _decode_shared(_Runner(model, context, shared), prefixes, spec, u_RN, shared)


def _decode_shared(run: _Runner, prefixes: list[list[int]], spec: RolloutSpec, u_RN: torch.Tensor,
                   shared: SharedKV) -> Rollouts:
    """All prefixes prefilled once in one left-padded forward, then one decode step per sampled
    token: row r's j-th token at position len(prefix) + j (no forced steps)."""
    k, n = spec.num_samples, spec.max_new_tokens
    num_prefixes, rows = len(prefixes), len(prefixes) * spec.num_samples
    longest = max(map(len, prefixes))
    pad_G = shared.pad
    prefill = torch.zeros(num_prefixes, longest, dtype=torch.long)
    for g, p in enumerate(prefixes):
        prefill[g, int(pad_G[g]):] = torch.tensor(p)
    positions = (torch.arange(longest)[None, :] - pad_G[:, None]).clamp(min=0)
    logits = run(prefill, 0, positions)
    if logits is not None:
        logits = logits.repeat_interleave(k, dim=0)
    forward_tokens = num_prefixes * longest
    lengths_R = torch.tensor([len(prefixes[r // k]) for r in range(rows)])
    gen_RN = torch.zeros(rows, n, dtype=torch.long)
    logps_RN = torch.zeros(rows, n)
    finished_R = torch.zeros(rows, dtype=torch.bool)
    for j in range(n):
        new_R = torch.zeros(rows, dtype=torch.long)
        done = torch.zeros(1, dtype=torch.long)
        if logits is not None:  # last stage
            sampled = _sample(logits, spec, u_RN[:, j]).cpu()
            logp = torch.log_softmax(logits.float(), dim=-1).gather(1, sampled.to(logits.device)[:, None])
            new_R = torch.where(finished_R, torch.zeros_like(sampled), sampled)
            logps_RN[:, j] = torch.where(finished_R, torch.zeros(rows), logp.squeeze(1).cpu())
            if spec.eos_id is not None:
                finished_R |= sampled == spec.eos_id
            done[0] = int(bool(finished_R.all()) or j + 1 >= n)
        new_R = parallel.pp_broadcast_from_last(new_R.to(run.device)).cpu()
        done = parallel.pp_broadcast_from_last(done.to(run.device)).cpu()
        gen_RN[:, j] = new_R
        if bool(done[0]):
            break
        logits = run(new_R[:, None], longest + j, (lengths_R + j)[:, None], slot=j)
        forward_tokens += rows
    stream_RT = torch.cat([torch.zeros(rows, longest, dtype=torch.long), gen_RN], dim=1)
    logps_RT = torch.cat([torch.zeros(rows, longest), logps_RN], dim=1)
    out = _collect(stream_RT, logps_RT, torch.full((rows,), longest), prefixes, spec, forward_tokens)
    out.kv_cache_bytes, out.kv_path = shared.bytes(), "shared"
    out.kv_bytes_per_prefix = out.kv_cache_bytes / num_prefixes
    return out


def _decode(run: _Runner, prefixes: list[list[int]], spec: RolloutSpec, u_RN: torch.Tensor) -> Rollouts:
    """Megatron's static context (or recomputation): all rows share one sequence offset, so the
    longer prefixes feed their remaining tokens one decode step at a time (forced, not sampled)."""
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
    rows_R = torch.arange(rows)

    if spec.use_kv_cache and spec.share_prefill:
        prefill = torch.tensor([p[:shortest] for p in prefixes])
        logits = run(prefill, 0)
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
            u_R = u_RN[rows_R, (position - lengths).clamp(0, n - 1)]  # row r's (position - len)-th draw
            sampled = _sample(logits, spec, u_R).cpu()
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
    if context is not None:
        out.kv_cache_bytes = sum(t.numel() * t.element_size() for kv in context.key_value_memory_dict.values() for t in kv)
        out.kv_path = "megatron"
    else:
        out.kv_path = "recompute"
    out.kv_bytes_per_prefix = out.kv_cache_bytes / num_prefixes
    return out


def _collect(stream_RT: torch.Tensor, logps_RT: torch.Tensor, lengths: torch.Tensor,
             prefixes: list[list[int]], spec: RolloutSpec, forward_tokens: int) -> Rollouts:
    """Row r's rollout: ``stream_RT[r]`` from ``lengths[r]`` on (at most N tokens, cut after EOS)."""
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
