"""The packed micro-batch: fixed-shape tensors of one micro-batch and their contract.

Built by rlpt_plugin/rl/packing.py (unpacked rows) and rlpt_plugin/rl/shared_rows.py
(prefix-shared rows); the row layout is described in packing.py's module docstring.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import ClassVar

import torch


@dataclass
class MicroBatch:
    """One packed micro-batch; every tensor on the same device (CPU when built).

    Shapes: ``*_BS`` [B, S]; ``chosen_rows_P`` / ``rejected_rows_P`` [P] (row
    indices, pair p = (chosen_rows_P[p], rejected_rows_P[p])); ``rf_rows_R``
    [R]; ``grpo_rows_G`` / ``grpo_adv_G`` [G] (Dr. GRPO items: row, advantage);
    ``group_ids_B`` [B] (-1 for padding). Rows ``>= num_real_rows`` are
    padding.
    """

    tokens_BS: torch.Tensor
    labels_BS: torch.Tensor
    position_ids_BS: torch.Tensor
    lm_mask_BS: torch.Tensor
    rl_mask_BS: torch.Tensor
    ref_logps_BS: torch.Tensor
    chosen_rows_P: torch.Tensor
    rejected_rows_P: torch.Tensor
    rf_rows_R: torch.Tensor
    group_ids_B: torch.Tensor
    num_real_rows: int
    segment_ids_BS: torch.Tensor | None = None
    chosen_segs_P: torch.Tensor | None = None
    rejected_segs_P: torch.Tensor | None = None
    rf_segs_R: torch.Tensor | None = None
    grpo_rows_G: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    grpo_adv_G: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.float32))
    grpo_segs_G: torch.Tensor | None = None
    """The GRPO items' segments of prefix-shared rows (None when unpacked, or built without)."""

    _SHARED: ClassVar[tuple[str, ...]] = ("segment_ids_BS", "chosen_segs_P", "rejected_segs_P", "rf_segs_R")
    _DTYPES: ClassVar[dict[str, torch.dtype]] = {
        "tokens_BS": torch.int64, "labels_BS": torch.int64, "position_ids_BS": torch.int64,
        "lm_mask_BS": torch.float32, "rl_mask_BS": torch.float32, "ref_logps_BS": torch.float32,
        "chosen_rows_P": torch.int64, "rejected_rows_P": torch.int64, "rf_rows_R": torch.int64,
        "group_ids_B": torch.int64, "grpo_rows_G": torch.int64, "grpo_adv_G": torch.float32,
    }  # fmt: skip

    def to(self, device: torch.device | str, non_blocking: bool = False) -> MicroBatch:
        """This micro-batch with every tensor on ``device`` (self when already there)."""
        moved = {f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                 for f in fields(self) if f.name != "num_real_rows" and getattr(self, f.name) is not None}
        return MicroBatch(**moved, num_real_rows=self.num_real_rows)

    @property
    def shared(self) -> bool:
        """Whether this micro-batch holds prefix-shared rows (needs their mask and positions)."""
        return self.segment_ids_BS is not None

    def validate(self) -> None:
        """Raise ``ValueError`` if the micro-batch breaks the packing contract."""
        for name, dtype in self._DTYPES.items():
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dtype != dtype:
                got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"MicroBatch.{name} must be a {dtype} tensor, got {got}")
        if self.tokens_BS.dim() != 2:
            shape = tuple(self.tokens_BS.shape)
            raise ValueError(f"MicroBatch.tokens_BS must be 2-D [B, S], got shape {shape}")
        b, s = self.tokens_BS.shape
        for name in ("labels_BS", "position_ids_BS", "lm_mask_BS", "rl_mask_BS", "ref_logps_BS"):
            shape = tuple(getattr(self, name).shape)
            if shape != (b, s):
                raise ValueError(f"MicroBatch.{name} must have shape {(b, s)}, got {shape}")
        for name in ("chosen_rows_P", "rejected_rows_P", "rf_rows_R", "group_ids_B", "grpo_rows_G"):
            shape = tuple(getattr(self, name).shape)
            if len(shape) != 1:
                raise ValueError(f"MicroBatch.{name} must be 1-D, got shape {shape}")
        if (got := self.group_ids_B.shape[0]) != b:
            raise ValueError(f"MicroBatch.group_ids_B must have length B={b}, got {got}")
        if self.chosen_rows_P.shape != self.rejected_rows_P.shape:
            raise ValueError(
                f"MicroBatch.chosen_rows_P and rejected_rows_P must have the same length, got "
                f"{self.chosen_rows_P.shape[0]} and {self.rejected_rows_P.shape[0]}"
            )
        if self.grpo_adv_G.shape != self.grpo_rows_G.shape:
            raise ValueError(f"MicroBatch.grpo_adv_G must have the shape of grpo_rows_G "
                             f"{tuple(self.grpo_rows_G.shape)}, got {tuple(self.grpo_adv_G.shape)}")
        if self.grpo_segs_G is not None and (self.grpo_segs_G.shape != self.grpo_rows_G.shape or not self.shared):
            raise ValueError("MicroBatch.grpo_segs_G must have the shape of grpo_rows_G, in shared rows only")
        if self.shared and self.grpo_rows_G.numel() and self.grpo_segs_G is None:
            raise ValueError("MicroBatch.grpo_segs_G must be set for GRPO items in prefix-shared rows")
        if not 0 <= self.num_real_rows <= b:
            raise ValueError(f"MicroBatch.num_real_rows must be in [0, {b}], got {self.num_real_rows}")
        for name in ("lm_mask_BS", "rl_mask_BS"):
            m = getattr(self, name)
            if not bool(((m == 0) | (m == 1)).all()):
                raise ValueError(f"MicroBatch.{name} must hold only 0 and 1")
        real = self.num_real_rows
        if bool((self.group_ids_B[:real] < 0).any()) or bool((self.group_ids_B[real:] != -1).any()):
            raise ValueError(
                f"MicroBatch.group_ids_B must be >= 0 for the {real} real rows and -1 after, "
                f"got {self.group_ids_B.tolist()}"
            )
        if bool(self.lm_mask_BS[real:].any()) or bool(self.rl_mask_BS[real:].any()):
            raise ValueError(f"MicroBatch: padding rows (>= num_real_rows={real}) must have all-zero masks")
        self._validate_shared(b, s)
        rl_rows = self.rl_mask_BS.sum(dim=1) > 0  # [B]
        for name, seg_name in (("chosen_rows_P", "chosen_segs_P"), ("rejected_rows_P", "rejected_segs_P"),
                               ("rf_rows_R", "rf_segs_R"), ("grpo_rows_G", "grpo_segs_G")):
            idx = getattr(self, name)
            if idx.numel() == 0:
                continue
            if bool((idx < 0).any()) or bool((idx >= b).any()):
                raise ValueError(f"MicroBatch.{name} must index rows in [0, {b}), got {idx.tolist()}")
            if self.shared:
                item_mask = (self.rl_mask_BS[idx] != 0) & (self.segment_ids_BS[idx] == getattr(self, seg_name)[:, None])
                empty = idx[~item_mask.any(dim=1)]
            else:
                empty = idx[~rl_rows[idx]]
            if empty.numel():
                raise ValueError(f"MicroBatch.{name}: rows {empty.tolist()} have an empty rl_mask")
        same = self.chosen_rows_P == self.rejected_rows_P
        if self.shared:
            same = same & (self.chosen_segs_P == self.rejected_segs_P)
        if bool(same.any()):
            pairs = same.nonzero().flatten().tolist()
            raise ValueError(f"MicroBatch: pairs {pairs} have chosen row == rejected row")

    def _validate_shared(self, b: int, s: int) -> None:
        given = [name for name in self._SHARED if getattr(self, name) is not None]
        if not given:
            return
        if len(given) != len(self._SHARED):
            raise ValueError(f"MicroBatch: {', '.join(self._SHARED)} must all be set or all None, "
                             f"got only {', '.join(given)}")
        for name in self._SHARED:
            if getattr(self, name).dtype != torch.int64:
                raise ValueError(f"MicroBatch.{name} must be a torch.int64 tensor, got {getattr(self, name).dtype}")
        if (shape := tuple(self.segment_ids_BS.shape)) != (b, s):
            raise ValueError(f"MicroBatch.segment_ids_BS must have shape {(b, s)}, got {shape}")
        if bool((self.segment_ids_BS < 0).any()):
            raise ValueError("MicroBatch.segment_ids_BS must be >= 0")
        for rows, segs in (("chosen_rows_P", "chosen_segs_P"), ("rejected_rows_P", "rejected_segs_P"),
                           ("rf_rows_R", "rf_segs_R")):
            if getattr(self, rows).shape != getattr(self, segs).shape:
                raise ValueError(f"MicroBatch.{segs} must have the shape of {rows} "
                                 f"{tuple(getattr(self, rows).shape)}, got {tuple(getattr(self, segs).shape)}")
