"""Prefix-shared rows: every trained candidate of one pool after ONE copy of its prefix.

Shape legend for tensor-name suffixes:
    B  rows of the micro-batch; S  positions per row (the step's row length, may exceed
    ``PackSpec.seq_length``); P DPO pairs; R RF-NLL targets.

Unpacked, a pool trains up to three rows ``x_j = c + s_j`` (the LM row on the original, chosen,
rejected), each repeating the context ``c`` (the prefix, left-truncated to ``S + 1 - len(s_j)``
tokens). Shared, the pool is ONE row::

    inputs  c[0] .. c[-2] | c[-1] s_1[:-1] | c[-1] s_2[:-1] | ...   | padding
    labels  c[1] .. c[-1] | s_1            | s_2            | ...   | padding
    segment 0  ..  0      | 1 ..  1        | 2 ..  2        | ...   | 0
    position 0 .. k-2     | k-1 .. k-2+L_1 | k-1 .. k-2+L_2 | ...   | 0

with ``k = len(c)``. Each candidate's segment starts with its own copy of the context's last
token, because that position's output predicts the candidate's first token and one position can
carry one label only. A query of segment j >= 1 attends to segment 0 (the shared context) and to
the causal part of its own segment only; segment 0 and padding attend causally. Positions are the
ones each token has in its own unpacked row, so the hidden state of every candidate position,
and hence its log-prob, equals the unpacked row's (RoPE must follow the position ids: see
rlpt_plugin/megatron/step/shared_attention.py). The context's labels carry the LM row's loss on the
prefix, exactly where the unpacked LM row has it.

A pool is shared only when every one of its rows keeps the same context (the truncation depends
on each candidate's length, and one context copy cannot hold two cuts exactly); otherwise its
rows stay unpacked in the same micro-batch (:func:`shared_layout` returns None).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlpt_plugin.rl.packing import ROLE_CHOSEN, ROLE_GRPO, ROLE_REJECTED, ROLE_RF, MicroBatch, PackSpec, Row


@dataclass(frozen=True)
class RowLayout:
    """Per-position content of one packed row (python lists of equal length ``n``).

    ``members``: for each source :class:`~rlpt_plugin.rl.packing.Row` index in the slot, the
    segment its candidate occupies (0 for an unpacked row).
    """

    tokens: list[int]
    labels: list[int]
    positions: list[int]
    segments: list[int]
    lm_mask: list[float]
    rl_mask: list[float]
    ref_logps: list[float]
    members: list[int]

    def __len__(self) -> int:
        return len(self.tokens)


def plain_layout(row: Row, ref_from_rollout: bool) -> RowLayout:
    """An unpacked row, as :func:`rlpt_plugin.rl.packing._build` lays it out (segment 0)."""
    x = list(row.tokens)
    n = len(x) - 1
    c_start = n - row.candidate_length
    lm = [0.0] * n
    if row.lm:
        lm = [1.0] * n if row.lm_mask is None else list(row.lm_mask)
    ref = [0.0] * n
    if ref_from_rollout and row.ref_logps is not None:
        ref[c_start:] = list(row.ref_logps)
    return RowLayout(tokens=x[:-1], labels=x[1:], positions=list(range(n)), segments=[0] * n,
                     lm_mask=lm, rl_mask=[0.0] * c_start + [1.0] * row.candidate_length,
                     ref_logps=ref, members=[0])


def shared_layout(rows: Sequence[Row], ref_from_rollout: bool) -> RowLayout | None:
    """The rows of ONE pool as one shared row, or None when they cannot share a context copy.

    ``rows``: :class:`~rlpt_plugin.rl.packing.Row` objects of one group, as
    :func:`rlpt_plugin.rl.packing.group_rows` makes them (same prefix, each cut to fit).
    """
    if not rows:
        raise ValueError("shared_layout needs at least one row, got none")
    contexts = {r.tokens[: len(r.tokens) - r.candidate_length] for r in rows}
    if len(contexts) != 1 or len({r.group_id for r in rows}) != 1:
        return None
    (context,) = contexts
    lm_rows = [r for r in rows if r.lm]
    if len(lm_rows) > 1 or any(r.lm_mask is not None for r in lm_rows):
        return None  # one LM row per pool, trained on every label (group_rows' contract)
    k = len(context)
    tokens, labels = list(context[:-1]), list(context[1:])
    positions, segments = list(range(k - 1)), [0] * (k - 1)
    lm_mask = [1.0 if lm_rows else 0.0] * (k - 1)
    rl_mask, ref = [0.0] * (k - 1), [0.0] * (k - 1)
    members = []
    for j, row in enumerate(rows, start=1):
        suffix = row.tokens[k:]
        n = len(suffix)
        tokens += [context[-1], *suffix[:-1]]
        labels += list(suffix)
        positions += list(range(k - 1, k - 1 + n))
        segments += [j] * n
        lm_mask += [1.0 if row.lm else 0.0] * n
        rl_mask += [1.0] * n
        ref += list(row.ref_logps) if ref_from_rollout and row.ref_logps is not None else [0.0] * n
        members.append(j)
    return RowLayout(tokens=tokens, labels=labels, positions=positions, segments=segments,
                     lm_mask=lm_mask, rl_mask=rl_mask, ref_logps=ref, members=members)


def prefix_shared_mask(segment_ids_BS: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S] bool attention mask, True = masked (megatron's convention).

    Query q may attend key k iff ``k <= q`` and (``segment[k] == 0`` or
    ``segment[k] == segment[q]``): causal within the row, and a candidate's segment never sees
    another candidate's. All-zero segments give the plain causal mask.
    """
    if segment_ids_BS.dim() != 2:
        raise ValueError(f"segment_ids_BS must be 2-D [B, S], got shape {tuple(segment_ids_BS.shape)}")
    s = segment_ids_BS.shape[1]
    causal_SS = torch.triu(torch.ones(s, s, dtype=torch.bool, device=segment_ids_BS.device), 1)
    seg_q_BS1 = segment_ids_BS[:, :, None]
    seg_k_B1S = segment_ids_BS[:, None, :]
    other_BSS = (seg_k_B1S != 0) & (seg_k_B1S != seg_q_BS1)
    return (causal_SS[None] | other_BSS)[:, None]


def slots(group_row_lists: Sequence[list[Row]], lm_rows: Sequence[Row], spec: PackSpec) -> list[RowLayout]:
    """One shared row per pool that can share its context, its unpacked rows otherwise."""
    out: list[RowLayout] = []
    for group_row_list in group_row_lists:
        if not group_row_list:
            continue
        shared = shared_layout(group_row_list, spec.ref_from_rollout)
        out.extend([shared] if shared is not None else
                   [plain_layout(r, spec.ref_from_rollout) for r in group_row_list])
    return out + [plain_layout(r, spec.ref_from_rollout) for r in lm_rows]


def build_micro_batches(per_mb: list[list[Row]], slots: list[list[RowLayout]], spec: PackSpec) -> list[MicroBatch]:
    """Micro-batches of one shape ``[B', S']`` (see ``PackSpec.shared_rows``) from the slots."""
    width = max([spec.seq_length, *(len(lay) for mb in slots for lay in mb)])
    bsz = max([1, *(len(mb) for mb in slots)])
    out = []
    for mb_rows, mb_slots in zip(per_mb, slots):
        out.append(_fill(mb_rows, mb_slots, bsz, width, spec.pad_id))
    return out


def _fill(rows: list[Row], slots: list[RowLayout], bsz: int, width: int, pad_id: int) -> MicroBatch:
    def full(value: float, dtype: torch.dtype) -> torch.Tensor:
        return torch.full((bsz, width), value, dtype=dtype)

    tokens_BS, labels_BS = full(pad_id, torch.int64), full(pad_id, torch.int64)
    position_ids_BS, segment_ids_BS = full(0, torch.int64), full(0, torch.int64)
    lm_mask_BS, rl_mask_BS, ref_logps_BS = (full(0.0, torch.float32) for _ in range(3))
    group_ids_B = torch.full((bsz,), -1, dtype=torch.int64)
    chosen: dict[int, tuple[int, int]] = {}
    rejected: dict[int, tuple[int, int]] = {}
    rf: list[tuple[int, int]] = []
    grpo: list[tuple[int, int]] = []
    advantages: list[float] = []
    it = iter(rows)  # the slots hold the rows in this order, each slot its members
    for b, lay in enumerate(slots):
        n = len(lay)
        tokens_BS[b, :n] = torch.tensor(lay.tokens, dtype=torch.int64)
        labels_BS[b, :n] = torch.tensor(lay.labels, dtype=torch.int64)
        position_ids_BS[b, :n] = torch.tensor(lay.positions, dtype=torch.int64)
        segment_ids_BS[b, :n] = torch.tensor(lay.segments, dtype=torch.int64)
        lm_mask_BS[b, :n] = torch.tensor(lay.lm_mask, dtype=torch.float32)
        rl_mask_BS[b, :n] = torch.tensor(lay.rl_mask, dtype=torch.float32)
        ref_logps_BS[b, :n] = torch.tensor(lay.ref_logps, dtype=torch.float32)
        for seg in lay.members:
            row = next(it)
            group_ids_B[b] = row.group_id
            if ROLE_CHOSEN in row.roles:
                chosen[row.pair_id] = (b, seg)  # type: ignore[index]
            if ROLE_REJECTED in row.roles:
                rejected[row.pair_id] = (b, seg)  # type: ignore[index]
            if ROLE_RF in row.roles:
                rf.append((b, seg))
            if ROLE_GRPO in row.roles:
                grpo.append((b, seg))
                advantages.append(row.advantage)  # type: ignore[arg-type]
    assert next(it, None) is None, "every row of the micro-batch sits in exactly one slot"
    pair_ids = sorted(chosen, key=chosen.__getitem__)

    def column(items: list[tuple[int, int]], i: int) -> torch.Tensor:
        return torch.tensor([item[i] for item in items], dtype=torch.int64)

    chosen_items = [chosen[p] for p in pair_ids]
    rejected_items = [rejected[p] for p in pair_ids]
    return MicroBatch(
        tokens_BS=tokens_BS, labels_BS=labels_BS, position_ids_BS=position_ids_BS,
        lm_mask_BS=lm_mask_BS, rl_mask_BS=rl_mask_BS, ref_logps_BS=ref_logps_BS,
        chosen_rows_P=column(chosen_items, 0), rejected_rows_P=column(rejected_items, 0),
        rf_rows_R=column(rf, 0), group_ids_B=group_ids_B, num_real_rows=len(slots),
        segment_ids_BS=segment_ids_BS, chosen_segs_P=column(chosen_items, 1),
        rejected_segs_P=column(rejected_items, 1), rf_segs_R=column(rf, 1),
        grpo_rows_G=column(grpo, 0), grpo_adv_G=torch.tensor(advantages, dtype=torch.float32),
        grpo_segs_G=column(grpo, 1))
