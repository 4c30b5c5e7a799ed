"""Turn selected candidate groups into fixed-shape micro-batches.

Shape legend for tensor-name suffixes:
    B  rows per micro-batch (``PackSpec.micro_batch_size``)
    S  positions per row (``PackSpec.seq_length``)
    P  DPO pairs in a micro-batch (varies per micro-batch)
    R  reward-filtered NLL rows in a micro-batch (varies per micro-batch)

Row layout (Megatron GPT convention): a row holds a full sequence
``x = prefix + candidate`` of length ``L <= S + 1``;
``tokens_BS[b, :L-1] = x[:-1]`` and ``labels_BS[b, :L-1] = x[1:]``. Positions
``>= L-1`` are padding: token and label ``pad_id``, every mask and ref 0.
``rl_mask_BS`` is 1 at the last ``len(candidate)`` label positions of every
real row (the positions whose label is a candidate token); which rows an RL
term reads is given by ``chosen_rows_P`` / ``rejected_rows_P`` / ``rf_rows_R``.
Real rows come first in a micro-batch, padding rows (group id -1) after.

With ``PackSpec.shared_rows`` each pool's rows become ONE prefix-shared row
(rlpt_plugin/rl/shared_rows.py): ``segment_ids_BS`` says which candidate each
position belongs to, and a DPO pair or RF-NLL target is a (row, segment) item
(``chosen_segs_P`` / ``rejected_segs_P`` / ``rf_segs_R`` / ``grpo_segs_G``). Unpacked
micro-batches leave these five fields None.

Dr. GRPO items (``PackSpec.use_grpo``): every rollout of a pool with GRPO advantages is a row
(or segment) with role "grpo"; ``grpo_rows_G`` / ``grpo_adv_G`` give each item's row and
advantage, and its old log-probs are the row's ``ref_logps`` (rollout-time, rlpt_plugin/rl/grpo.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from rlpt_plugin.rl.context import row_context
from rlpt_plugin.rl.microbatch import MicroBatch
from rlpt_plugin.rl.pool import CandidateGroup, Selection

ROLE_CHOSEN = "chosen"
ROLE_REJECTED = "rejected"
ROLE_RF = "rf"
ROLE_GRPO = "grpo"
ROLES: frozenset[str] = frozenset({ROLE_CHOSEN, ROLE_REJECTED, ROLE_RF, ROLE_GRPO})


@dataclass(frozen=True)
class PackSpec:
    """Static shape and loss switches of one training step on one DP rank."""

    seq_length: int
    micro_batch_size: int
    num_microbatches: int
    pad_id: int = 0
    lm_on_window: bool = True
    use_dpo: bool = True
    use_rf_nll: bool = False
    use_grpo: bool = False
    """Dr. GRPO rows: every rollout of a selection with advantages (rule "grpo")."""
    ref_from_rollout: bool = False
    shared_rows: bool = False
    """Pack each pool's rows as one prefix-shared row. ``micro_batch_size`` stays the budget of
    UNPACKED rows (what the setup checks size); a shared step's micro-batches are
    ``[B', S']`` with ``B'`` the most slots any of its micro-batches needs and ``S'`` its longest
    row (at least ``seq_length``)."""

    def __post_init__(self) -> None:
        for name in ("seq_length", "micro_batch_size", "num_microbatches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"PackSpec.{name} must be an int >= 1, got {v!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or self.pad_id < 0:
            raise ValueError(f"PackSpec.pad_id must be an int >= 0, got {self.pad_id!r}")
        if not (self.lm_on_window or self.use_dpo or self.use_rf_nll or self.use_grpo):
            raise ValueError("PackSpec: at least one of lm_on_window, use_dpo, use_rf_nll, use_grpo "
                             "must be True, got all False")


@dataclass(frozen=True)
class Row:
    """One sequence to place in a micro-batch.

    Attributes:
        group_id: id of the group the row came from (>= 0).
        tokens: full sequence ``x = prefix + candidate`` (already truncated).
        candidate_length: number of trailing tokens of ``x`` that are the
            candidate; ``1 <= candidate_length < len(tokens)`` because the first
            candidate token must be predicted from at least one context token.
        lm: the row carries the LM loss on every real label position.
        roles: subset of ``{"chosen", "rejected", "rf", "grpo"}``.
        pair_id: identifies the DPO pair; required iff chosen/rejected in roles.
        ref_logps: reference log-prob per candidate token, or ``None``.
        lm_mask: 0/1 per label position (``len(tokens) - 1``) for an LM row whose
            source masks some labels (Megatron's ``loss_mask``, e.g. EOD with
            ``eod_mask_loss``); ``None`` trains every label position.
        advantage: the Dr. GRPO advantage; set exactly when ``"grpo"`` is in roles.
    """

    group_id: int
    tokens: tuple[int, ...]
    candidate_length: int
    lm: bool = False
    roles: frozenset[str] = frozenset()
    pair_id: int | None = None
    ref_logps: tuple[float, ...] | None = None
    lm_mask: tuple[float, ...] | None = None
    advantage: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(self.tokens))
        if self.lm_mask is not None:
            object.__setattr__(self, "lm_mask", tuple(float(v) for v in self.lm_mask))
        object.__setattr__(self, "roles", frozenset(self.roles))
        if self.ref_logps is not None:
            object.__setattr__(self, "ref_logps", tuple(float(v) for v in self.ref_logps))
        where = f"row of group {self.group_id}"
        if self.group_id < 0:
            raise ValueError(f"{where}: group_id must be >= 0, got {self.group_id}")
        if not 1 <= self.candidate_length < len(self.tokens):
            raise ValueError(
                f"{where}: candidate_length must be in [1, len(tokens)={len(self.tokens)}) so the "
                f"candidate has a context token, got {self.candidate_length}"
            )
        bad = self.roles - ROLES
        if bad:
            raise ValueError(f"{where}: roles must be a subset of {sorted(ROLES)}, got {sorted(bad)}")
        if ROLE_CHOSEN in self.roles and ROLE_REJECTED in self.roles:
            raise ValueError(f"{where}: roles cannot hold both 'chosen' and 'rejected'")
        in_pair = bool(self.roles & {ROLE_CHOSEN, ROLE_REJECTED})
        if in_pair != (self.pair_id is not None):
            raise ValueError(
                f"{where}: pair_id must be set exactly when roles hold chosen/rejected, "
                f"got pair_id={self.pair_id} with roles {sorted(self.roles)}"
            )
        if (ROLE_GRPO in self.roles) != (self.advantage is not None):
            raise ValueError(f"{where}: advantage must be set exactly when roles hold 'grpo', got "
                             f"advantage={self.advantage} with roles {sorted(self.roles)}")
        if not self.lm and not self.roles:
            raise ValueError(f"{where}: row has no loss (lm=False and no roles)")
        if self.ref_logps is not None and len(self.ref_logps) != self.candidate_length:
            raise ValueError(
                f"{where}: len(ref_logps) must equal candidate_length={self.candidate_length}, "
                f"got {len(self.ref_logps)}"
            )
        if self.lm_mask is not None:
            if not self.lm:
                raise ValueError(f"{where}: lm_mask is set but the row carries no LM loss (lm=False)")
            if len(self.lm_mask) != len(self.tokens) - 1 or any(v not in (0.0, 1.0) for v in self.lm_mask):
                raise ValueError(f"{where}: lm_mask must hold one 0/1 per label position "
                                 f"({len(self.tokens) - 1}), got {len(self.lm_mask)} values")


def _overflow_message(needed: int, mb: int, spec: PackSpec, total: int, what: str) -> str:
    available = spec.num_microbatches * spec.micro_batch_size
    return (
        f"micro-batch {mb} needs {needed} rows ({what}) but micro_batch_size is {spec.micro_batch_size}; "
        f"the step needs {total} rows vs {spec.num_microbatches} x {spec.micro_batch_size} = {available} "
        f"available; use a larger micro_batch_size or fewer groups per step"
    )


def pack_rows(rows: Sequence[Row], assignment: Sequence[int], spec: PackSpec) -> list[MicroBatch]:
    """Place ``rows[i]`` into micro-batch ``assignment[i]``, keeping row order.

    Returns exactly ``spec.num_microbatches`` micro-batches of exactly
    ``spec.micro_batch_size`` rows. Raises ``ValueError`` on an out-of-range
    assignment, a row longer than ``S + 1``, a micro-batch overflow, a DPO pair
    that is incomplete or split across micro-batches, or (with
    ``ref_from_rollout``) a pair row without ``ref_logps``.
    """
    return [_build(mb_rows, spec) for mb_rows in _assign(rows, assignment, spec)]


def _assign(rows: Sequence[Row], assignment: Sequence[int], spec: PackSpec) -> list[list[Row]]:
    """The rows of each micro-batch, after every check :func:`pack_rows` documents."""
    if len(rows) != len(assignment):
        raise ValueError(f"assignment must have one entry per row ({len(rows)}), got {len(assignment)}")
    s, bsz, m_count = spec.seq_length, spec.micro_batch_size, spec.num_microbatches
    per_mb: list[list[Row]] = [[] for _ in range(m_count)]
    # pair_id -> {role: micro-batch index}; a pair must be one chosen + one rejected row.
    pairs: dict[int, dict[str, int]] = {}
    for row, mb in zip(rows, assignment):
        if not 0 <= mb < m_count:
            raise ValueError(
                f"assignment of a row of group {row.group_id} must be in [0, {m_count}), got {mb}"
            )
        if len(row.tokens) > s + 1:
            raise ValueError(
                f"row of group {row.group_id}: len(tokens) must be <= seq_length + 1 = {s + 1}, "
                f"got {len(row.tokens)}"
            )
        if spec.ref_from_rollout and (row.pair_id is not None or ROLE_GRPO in row.roles) \
                and row.ref_logps is None:
            what = f"pair {row.pair_id}" if row.pair_id is not None else "a GRPO item"
            raise ValueError(f"row of group {row.group_id} ({what}): ref_logps must be set when "
                             "ref_from_rollout=True, got None")
        for role in (ROLE_CHOSEN, ROLE_REJECTED):
            if role in row.roles:
                slots = pairs.setdefault(row.pair_id, {})  # type: ignore[arg-type]
                if role in slots:
                    raise ValueError(f"pair {row.pair_id} has more than one {role} row")
                slots[role] = mb
        per_mb[mb].append(row)
    for pair_id, slots in pairs.items():
        if len(slots) != 2:
            raise ValueError(f"pair {pair_id} must have one chosen and one rejected row, got {sorted(slots)}")
        if slots[ROLE_CHOSEN] != slots[ROLE_REJECTED]:
            a, b = sorted((slots[ROLE_CHOSEN], slots[ROLE_REJECTED]))
            raise ValueError(f"pair {pair_id} is split across micro-batches {a} and {b}")
    for mb, mb_rows in enumerate(per_mb):
        if len(mb_rows) > bsz:
            raise ValueError(_overflow_message(len(mb_rows), mb, spec, len(rows), "explicit assignment"))
    return per_mb


def _build(rows: Sequence[Row], spec: PackSpec) -> MicroBatch:
    s, bsz = spec.seq_length, spec.micro_batch_size
    tokens_BS = torch.full((bsz, s), spec.pad_id, dtype=torch.int64)
    labels_BS = torch.full((bsz, s), spec.pad_id, dtype=torch.int64)
    lm_mask_BS = torch.zeros((bsz, s), dtype=torch.float32)
    rl_mask_BS = torch.zeros((bsz, s), dtype=torch.float32)
    ref_logps_BS = torch.zeros((bsz, s), dtype=torch.float32)
    group_ids_B = torch.full((bsz,), -1, dtype=torch.int64)
    chosen_by_pair: dict[int, int] = {}
    rejected_by_pair: dict[int, int] = {}
    rf_rows: list[int] = []
    grpo: list[tuple[int, float]] = []
    for b, row in enumerate(rows):
        x = torch.tensor(row.tokens, dtype=torch.int64)
        n_lab = x.numel() - 1  # label positions of this row
        c_start = n_lab - row.candidate_length  # first label position that is a candidate token
        tokens_BS[b, :n_lab] = x[:-1]
        labels_BS[b, :n_lab] = x[1:]
        rl_mask_BS[b, c_start:n_lab] = 1.0
        if row.lm:
            lm_mask_BS[b, :n_lab] = 1.0 if row.lm_mask is None else torch.tensor(row.lm_mask)
        if spec.ref_from_rollout and row.ref_logps is not None:
            ref_logps_BS[b, c_start:n_lab] = torch.tensor(row.ref_logps, dtype=torch.float32)
        group_ids_B[b] = row.group_id
        if ROLE_CHOSEN in row.roles:
            chosen_by_pair[row.pair_id] = b  # type: ignore[index]
        if ROLE_REJECTED in row.roles:
            rejected_by_pair[row.pair_id] = b  # type: ignore[index]
        if ROLE_RF in row.roles:
            rf_rows.append(b)
        if ROLE_GRPO in row.roles:
            grpo.append((b, row.advantage))  # type: ignore[arg-type]
    # Pairs in order of their chosen row so the P order follows the row order.
    pair_ids = sorted(chosen_by_pair, key=chosen_by_pair.__getitem__)
    return MicroBatch(
        tokens_BS=tokens_BS,
        labels_BS=labels_BS,
        position_ids_BS=torch.arange(s, dtype=torch.int64).repeat(bsz, 1),
        lm_mask_BS=lm_mask_BS,
        rl_mask_BS=rl_mask_BS,
        ref_logps_BS=ref_logps_BS,
        chosen_rows_P=torch.tensor([chosen_by_pair[p] for p in pair_ids], dtype=torch.int64),
        rejected_rows_P=torch.tensor([rejected_by_pair[p] for p in pair_ids], dtype=torch.int64),
        rf_rows_R=torch.tensor(rf_rows, dtype=torch.int64),
        group_ids_B=group_ids_B,
        num_real_rows=len(rows),
        grpo_rows_G=torch.tensor([b for b, _ in grpo], dtype=torch.int64),
        grpo_adv_G=torch.tensor([a for _, a in grpo], dtype=torch.float32),
    )


def group_rows(group: CandidateGroup, selection: Selection, spec: PackSpec) -> list[Row]:
    """Rows of one group, one per distinct candidate index, in candidate order.

    A candidate that plays several roles (e.g. the original is also the chosen
    one) becomes ONE row with the roles merged, so it is neither trained twice
    by the LM term nor duplicated in the forward pass. The pair id is the
    group id. The prefix is truncated from the left to fit ``S + 1`` tokens.
    A group whose original suffix is not a candidate (``lm_original``) gets
    one LM-only row for it first, when ``spec.lm_on_window``.
    """
    selection.validate_for(group)
    gid = group.group_id
    if spec.use_dpo and selection.skip_reason is None and selection.chosen is None and not selection.fallback:
        raise ValueError(
            f"group {gid}: use_dpo=True needs selections made with rule='dpo', got one with best only"
        )
    lm: set[int] = set()
    roles: dict[int, set[str]] = {}
    orig = group.original_index
    if spec.lm_on_window and orig is not None:
        lm.add(orig)
    if spec.use_dpo and selection.chosen is not None:
        roles.setdefault(selection.chosen, set()).add(ROLE_CHOSEN)
        roles.setdefault(selection.rejected, set()).add(ROLE_REJECTED)  # type: ignore[arg-type]
    if spec.use_rf_nll and selection.best is not None:
        roles.setdefault(selection.best, set()).add(ROLE_RF)
    advantage = dict(selection.advantages) if spec.use_grpo else {}
    for idx in advantage:
        roles.setdefault(idx, set()).add(ROLE_GRPO)
    in_pair = spec.use_dpo and selection.chosen is not None
    if spec.ref_from_rollout and (in_pair or advantage) and group.ref_logps is None:
        raise ValueError(f"group {gid}: ref_logps must be set when ref_from_rollout=True, got None")

    rows: list[Row] = []
    if spec.lm_on_window and group.lm_original is not None:
        rows.append(Row(group_id=gid, tokens=_row_tokens(group, group.lm_original, spec, "lm_original"),
                        candidate_length=len(group.lm_original), lm=True))
    for idx in sorted(lm | set(roles)):
        cand = group.candidates[idx]
        r = roles.get(idx, set())
        rows.append(
            Row(
                group_id=gid,
                tokens=_row_tokens(group, cand, spec, f"candidates[{idx}]"),
                candidate_length=len(cand),
                lm=idx in lm,
                roles=frozenset(r),
                pair_id=gid if r & {ROLE_CHOSEN, ROLE_REJECTED} else None,
                ref_logps=group.ref_logps[idx] if group.ref_logps is not None else None,
                advantage=advantage.get(idx),
            )
        )
    return rows


def _row_tokens(group: CandidateGroup, suffix: tuple[int, ...], spec: PackSpec, what: str) -> tuple[int, ...]:
    """``prefix + suffix``, the prefix truncated from the left to fit ``S + 1`` tokens."""
    gid = group.group_id
    if len(suffix) > spec.seq_length:
        raise ValueError(f"group {gid}: {what} has {len(suffix)} tokens, must be <= seq_length={spec.seq_length}")
    context = row_context(group.prefix, len(suffix), spec.seq_length)
    if not context:
        raise ValueError(f"group {gid}: prefix must keep >= 1 token before {what}, got an empty prefix")
    return context + suffix


def block_bounds(num_groups: int, num_microbatches: int) -> list[tuple[int, int]]:
    """``[start, end)`` group ranges: micro-batch m gets ``[m*G//M, (m+1)*G//M)``."""
    g, m = num_groups, num_microbatches
    return [(i * g // m, (i + 1) * g // m) for i in range(m)]


def pack_step(
    groups: Sequence[CandidateGroup], selections: Sequence[Selection], spec: PackSpec,
    lm_rows: Sequence[Row] = (),
) -> list[MicroBatch]:
    """Pack one step of one data-parallel rank into fixed-shape micro-batches.

    Groups go to micro-batches in contiguous, near-equal blocks (see
    :func:`block_bounds`), so the split depends only on ``len(groups)`` and
    ``num_microbatches``; a group's rows are never split, hence a DPO pair
    always sits in one micro-batch. ``lm_rows`` (LM-only rows from outside the
    groups, e.g. the job's own pretraining sequences) are spread the same way
    and follow the groups' rows of their micro-batch. Returns
    ``spec.num_microbatches`` micro-batches of ``spec.micro_batch_size`` rows
    each (tails are padding).
    """
    if len(groups) != len(selections):
        raise ValueError(f"selections must have one entry per group ({len(groups)}), got {len(selections)}")
    seen: set[int] = set()
    for g in groups:
        if g.group_id in seen:
            raise ValueError(f"group_id must be unique within a step, got {g.group_id} twice")
        seen.add(g.group_id)
    for row in lm_rows:
        if not row.lm or row.roles:
            raise ValueError(f"lm_rows must be LM-only rows, but the row of group {row.group_id} has "
                             f"lm={row.lm} and roles {sorted(row.roles)}")
    per_group = [group_rows(g, sel, spec) for g, sel in zip(groups, selections)]
    total = sum(len(r) for r in per_group) + len(lm_rows)
    from rlpt_plugin.rl import shared_rows  # it builds on this module's types

    rows: list[Row] = []
    assignment: list[int] = []
    slots: list[list[shared_rows.RowLayout]] = []
    group_blocks = block_bounds(len(groups), spec.num_microbatches)
    lm_blocks = block_bounds(len(lm_rows), spec.num_microbatches)
    for mb, ((start, end), (lm_start, lm_end)) in enumerate(zip(group_blocks, lm_blocks)):
        block = [row for rs in per_group[start:end] for row in rs] + list(lm_rows[lm_start:lm_end])
        if len(block) > spec.micro_batch_size:
            what = f"groups {start}..{end - 1}" + (f" and {lm_end - lm_start} LM-only rows" if lm_rows else "")
            raise ValueError(_overflow_message(len(block), mb, spec, total, what))
        rows.extend(block)
        assignment.extend([mb] * len(block))
        if spec.shared_rows:
            slots.append(shared_rows.slots(per_group[start:end], lm_rows[lm_start:lm_end], spec))
    if not spec.shared_rows:
        return pack_rows(rows, assignment, spec)
    per_mb = _assign(rows, assignment, spec)  # the same checks and errors as the unpacked rows
    return shared_rows.build_micro_batches(per_mb, slots, spec)
