"""Items of a packed micro-batch and the checks the loss runs on them.

An *item* is what one RL term reads: a whole row's ``rl_mask`` (one candidate per row) or, with
prefix-shared rows (rlpt_plugin/rl/shared_rows.py), the positions of one segment of a row.
Pure torch; shared by rlpt_plugin/rl/losses.py and rlpt_plugin/rl/grpo.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


class NonFiniteLogProbsError(ValueError):
    """A log-prob tensor holds NaN/inf at a position that enters the loss."""


def _masked(values_BS: Tensor, mask_BS: Tensor) -> Tensor:
    # torch.where instead of multiplication: 0 * NaN would poison the sum and the
    # gradient, and garbage at padded positions must stay harmless.
    return torch.where(mask_BS != 0, values_BS, torch.zeros((), dtype=values_BS.dtype,
                                                             device=values_BS.device))


def _check_same_shape(*named: tuple[str, Tensor]) -> None:
    (first_name, first), rest = named[0], named[1:]
    for name, tensor in rest:
        if tensor.shape != first.shape:
            raise ValueError(f"{first_name} and {name} must have the same shape, "
                             f"but got {tuple(first.shape)} and {tuple(tensor.shape)}")


def _check_rows(name: str, rows: Tensor, num_rows: int) -> None:
    if rows.dim() != 1 or rows.dtype.is_floating_point or rows.dtype.is_complex \
            or rows.dtype == torch.bool:
        raise ValueError(f"{name} must be a 1-D integer tensor, but got dtype {rows.dtype} "
                         f"and shape {tuple(rows.shape)}")
    bad = (rows < 0) | (rows >= num_rows)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"{name} must hold row indices in [0, {num_rows}), "
                         f"but {name}[{i}] is {int(rows[i])}")


def _check_binary(name: str, mask_BS: Tensor) -> None:
    bad_BS = (mask_BS != 0) & (mask_BS != 1)
    if bool(bad_BS.any()):
        row, pos = (int(v) for v in bad_BS.nonzero()[0])
        raise ValueError(f"{name} must contain only 0 and 1, but has "
                         f"{mask_BS[row, pos].item()} at (row {row}, position {pos})")


def _check_finite(name: str, values_BS: Tensor, used_BS: Tensor) -> None:
    bad_BS = used_BS & ~torch.isfinite(values_BS)
    if bool(bad_BS.any()):
        row, pos = (int(v) for v in bad_BS.nonzero()[0])
        raise NonFiniteLogProbsError(f"{name} must be finite at used positions, but has "
                                     f"{values_BS[row, pos].item()} at (row {row}, position {pos})")


@dataclass(frozen=True)
class Segments:
    """Which candidate of a prefix-shared row an item is (rlpt_plugin/rl/shared_rows.py).

    ``ids_BS`` [B, S]: the segment of every position; ``chosen_P`` / ``rejected_P`` [P] and
    ``rf_R`` [R] and ``grpo_G`` [G] (GRPO items; None: none): the segment of each item, next to its
    row index. An item's tokens are the
    positions of its row with ``rl_mask`` 1 AND its segment. Without Segments an item is its
    whole row's ``rl_mask`` (one candidate per row).
    """

    ids_BS: Tensor
    chosen_P: Tensor
    rejected_P: Tensor
    rf_R: Tensor
    grpo_G: Tensor | None = None


def item_masks(rl_mask_BS: Tensor, rows: Tensor, segment_ids_BS: Tensor | None = None,
               segs: Tensor | None = None) -> Tensor:
    """[N, S] 0/1 masks of N items (rows [N], segments [N] of a shared row, or whole rows)."""
    mask_NS = rl_mask_BS[rows]
    if segment_ids_BS is None:
        return mask_NS
    if segs is None or segs.shape != rows.shape:
        raise ValueError(f"segs must have the shape of rows {tuple(rows.shape)}, "
                         f"but got {None if segs is None else tuple(segs.shape)}")
    return torch.where(segment_ids_BS[rows] == segs[:, None], mask_NS, torch.zeros_like(mask_NS))


def _check_segments(seg: Segments, mask_BS: Tensor, chosen_rows_P: Tensor, rejected_rows_P: Tensor,
                    rf_rows_R: Tensor) -> None:
    _check_same_shape(("lm_mask_BS", mask_BS), ("segments.ids_BS", seg.ids_BS))
    for name, rows, segs in (("chosen", chosen_rows_P, seg.chosen_P), ("rejected", rejected_rows_P, seg.rejected_P),
                             ("rf", rf_rows_R, seg.rf_R)):
        if segs.shape != rows.shape or segs.dtype.is_floating_point:
            raise ValueError(f"segments.{name} must be an integer tensor of the shape of its rows "
                             f"{tuple(rows.shape)}, but got {segs.dtype} {tuple(segs.shape)}")
