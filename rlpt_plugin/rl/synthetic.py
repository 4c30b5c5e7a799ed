"""A deterministic source of scored candidate groups, for tests and the smallest demo run.

Group ``i`` is a pure function of ``(seed, i)``, so the global batch of a step is the same
whatever the data-parallel layout: rank ``r`` of ``D`` takes a contiguous share of the step's
group ids. Every prefix counts upward (token t is followed by t + 1, wrapping within
[1, vocab_size)); each candidate continues the count but replaces each token by a random one
with its own corruption rate (drawn uniformly in [0, 1)), and the "judge" scores a candidate
by the fraction of its tokens that keep counting. The rule is learnable, so the LM term (on
the original), DPO (best vs worst) and RF-NLL (best) all have something to learn. This is not the
synthetic world of the demo (rlpt_plugin/world); it exists so the loss and the Megatron
integration can be exercised before any teacher is wired in.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind


@dataclass(frozen=True, kw_only=True)
class SyntheticGroups:
    """vocab_size: token ids drawn from [1, vocab_size) (0 is padding).
    min_prefix/max_prefix: prefix length range; suffix_length: tokens per candidate.
    num_rollouts: K candidates of kind "rollout"; include_original adds an "original" first.
    """

    vocab_size: int
    seed: int = 1234
    min_prefix: int = 4
    max_prefix: int = 12
    suffix_length: int = 6
    num_rollouts: int = 3
    include_original: bool = True

    def __post_init__(self) -> None:
        errors = []
        if self.vocab_size < 3:
            errors.append(f"`vocab_size` must be >= 3, but is {self.vocab_size} instead.")
        if not 1 <= self.min_prefix <= self.max_prefix:
            errors.append(f"`min_prefix`/`max_prefix` must satisfy 1 <= min <= max, but are "
                          f"{self.min_prefix}/{self.max_prefix} instead.")
        if self.suffix_length < 1:
            errors.append(f"`suffix_length` must be >= 1, but is {self.suffix_length} instead.")
        if self.num_rollouts + int(self.include_original) < 2:
            errors.append("a pool needs at least 2 candidates (`num_rollouts` + original), but "
                          f"has {self.num_rollouts + int(self.include_original)} instead.")
        if errors:
            raise ValueError("SyntheticGroups: " + " ".join(errors))

    def _count(self, start: torch.Tensor, length: int) -> torch.Tensor:
        """[..., length] tokens counting up from ``start`` within [1, vocab_size)."""
        steps = torch.arange(length)
        return (start[..., None] - 1 + steps) % (self.vocab_size - 1) + 1

    def group(self, group_id: int) -> CandidateGroup:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + group_id)
        prefix_len = int(torch.randint(self.min_prefix, self.max_prefix + 1, (1,), generator=gen))
        start = torch.randint(1, self.vocab_size, (), generator=gen)
        sequence = self._count(start, prefix_len + self.suffix_length)
        prefix, truth = sequence[:prefix_len].tolist(), sequence[prefix_len:]
        num = self.num_rollouts + int(self.include_original)
        rate = torch.rand(num, 1, generator=gen)
        noise = torch.randint(1, self.vocab_size, (num, self.suffix_length), generator=gen)
        corrupt = torch.rand(num, self.suffix_length, generator=gen) < rate
        cands = torch.where(corrupt, noise, truth.expand(num, -1))
        kinds = ([CandidateKind.ORIGINAL] if self.include_original else []) + \
            [CandidateKind.ROLLOUT] * self.num_rollouts
        scores = (cands == truth).float().mean(dim=1).tolist()
        return CandidateGroup(prefix=tuple(prefix), candidates=tuple(tuple(c) for c in cands.tolist()),
                              kinds=tuple(kinds), scores=tuple(scores), ref_logps=None,
                              group_id=group_id)
