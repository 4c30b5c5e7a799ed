"""What the trainer consumes per micro-batch: a packed batch plus its step's global counts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from rlpt_plugin.rl.losses import Denominators, Segments, count_local
from rlpt_plugin.rl.packing import MicroBatch


@dataclass(frozen=True)
class StepMicroBatch:
    """One micro-batch of a training step.

    ``denominators`` are the GLOBAL counts of the whole step (every micro-batch on every
    data-parallel rank): each loss term is divided by its own count, so the step's loss and
    gradients do not depend on how the step is split over micro-batches or ranks.
    ``step`` is the optimizer step this batch belongs to (loss-weight schedules read it).
    """

    batch: MicroBatch
    denominators: Denominators
    step: int
    extras: tuple[tuple[str, float, float], ...] = ()
    """Step-level data metrics as (name, sum, count), carried by every micro-batch of the step
    with the values on the first one and zeros elsewhere, so the host's usual sum over
    micro-batches and data-parallel ranks gives the global figure."""


def step_extras(metrics: dict[str, tuple[float, float]], first: bool) -> tuple[tuple[str, float, float], ...]:
    """``metrics`` as StepMicroBatch.extras: real values on the first micro-batch, zeros after."""
    return tuple((name, s if first else 0.0, c if first else 0.0) for name, (s, c) in sorted(metrics.items()))


def batch_segments(mb: MicroBatch) -> Segments | None:
    """The items' segments of a prefix-shared micro-batch (None when unpacked)."""
    if not mb.shared:
        return None
    return Segments(ids_BS=mb.segment_ids_BS, chosen_P=mb.chosen_segs_P, rejected_P=mb.rejected_segs_P,
                    rf_R=mb.rf_segs_R, grpo_G=mb.grpo_segs_G)


def local_denominators(batches: Sequence[MicroBatch]) -> Denominators:
    """Sum of the per-micro-batch counts of one rank's share of a step."""
    total = Denominators(0.0, 0.0, 0.0)
    for mb in batches:
        total = total + count_local(mb.lm_mask_BS, mb.rl_mask_BS, mb.chosen_rows_P, mb.rf_rows_R,
                                    batch_segments(mb), mb.grpo_rows_G)
    return total
