"""Tests for rlpt_plugin.rl.losses against naive python-loop references (float64).

Shape legend: B rows, S positions, V vocab, P DPO pairs, R RF-NLL rows.
"""

from __future__ import annotations

import math

import pytest
import torch

from rlpt_plugin.rl.losses import (Denominators, LossConfig, LossWeights, NonFiniteLogProbsError,
                                   count_local, dpo_pair_losses, mixed_loss, sequence_logps,
                                   token_nll_sum)

B, S, V = 8, 10, 7
# Pairs (0,1), (3,2), (4,5), (7,6): each pair lives in two adjacent rows so that
# contiguous splits into 1, 2 or 4 micro-batches keep pairs together.
PAIRS = [(0, 1), (3, 2), (4, 5), (7, 6)]
RF_ROWS = [0, 3, 5]


def make_batch(seed: int = 0) -> dict:
    """Random float64 batch whose token log-probs come from leaf logits [B, S, V]."""
    gen = torch.Generator().manual_seed(seed)
    logits_BSV = torch.randn(B, S, V, generator=gen, dtype=torch.float64, requires_grad=True)
    labels_BS = torch.randint(0, V, (B, S), generator=gen)
    ref_BS = -torch.rand(B, S, generator=gen, dtype=torch.float64) * 3
    lm_mask_BS = torch.zeros(B, S, dtype=torch.float64)
    rl_mask_BS = torch.zeros(B, S, dtype=torch.float64)
    for b in range(B):
        prompt_len = 2 + b % 3
        suffix_len = 1 + (b * 5) % 4
        lm_mask_BS[b, :prompt_len] = 1
        rl_mask_BS[b, prompt_len:prompt_len + suffix_len] = 1
    return dict(logits=logits_BSV, labels=labels_BS, ref=ref_BS, lm=lm_mask_BS, rl=rl_mask_BS)


def policy_logps(batch: dict) -> torch.Tensor:
    logits_BSV = batch["logits"]
    return torch.log_softmax(logits_BSV, -1).gather(-1, batch["labels"][..., None])[..., 0]


def naive_logp(batch: dict, b: int, s: int) -> torch.Tensor:
    row = batch["logits"][b, s]
    return row[int(batch["labels"][b, s])] - torch.log(torch.exp(row).sum())


def naive_seq(batch: dict, b: int, reduction: str, ref: bool) -> torch.Tensor:
    total, n = torch.zeros((), dtype=torch.float64), 0
    for s in range(S):
        if batch["rl"][b, s] == 1:
            total = total + (batch["ref"][b, s] if ref else naive_logp(batch, b, s))
            n += 1
    return total / n if reduction == "mean" else total


def naive_terms(batch: dict, beta: float, reduction: str = "sum") -> dict[str, torch.Tensor]:
    """Unnormalised sums of the three terms, written with loops over rows and positions."""
    lm = torch.zeros((), dtype=torch.float64)
    for b in range(B):
        for s in range(S):
            if batch["lm"][b, s] == 1:
                lm = lm - naive_logp(batch, b, s)
    dpo = torch.zeros((), dtype=torch.float64)
    for c, r in PAIRS:
        x = beta * ((naive_seq(batch, c, reduction, False) - naive_seq(batch, c, reduction, True))
                    - (naive_seq(batch, r, reduction, False) - naive_seq(batch, r, reduction, True)))
        dpo = dpo + torch.log1p(torch.exp(-x))
    rf = torch.zeros((), dtype=torch.float64)
    for b in RF_ROWS:
        for s in range(S):
            if batch["rl"][b, s] == 1:
                rf = rf - naive_logp(batch, b, s)
    return {"lm": lm, "dpo": dpo, "rf_nll": rf}


def rows(values: list[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def run(batch: dict, token_logps_BS: torch.Tensor, *, weights: LossWeights | None = None,
        config: LossConfig | None = None, denominators: Denominators | None = None, **over):
    args = dict(token_logps_BS=token_logps_BS, ref_token_logps_BS=batch["ref"],
                lm_mask_BS=batch["lm"], rl_mask_BS=batch["rl"],
                chosen_rows_P=rows([c for c, _ in PAIRS]), rejected_rows_P=rows([r for _, r in PAIRS]),
                rf_rows_R=rows(RF_ROWS))
    args.update(over)
    if denominators is None:
        denominators = count_local(args["lm_mask_BS"], args["rl_mask_BS"], args["chosen_rows_P"],
                                   args["rf_rows_R"])
    return mixed_loss(**args, weights=weights or LossWeights(lm=1.0, dpo=1.0, rf_nll=0.5),
                      denominators=denominators, config=config or LossConfig(beta=0.3))


def test_dpo_is_ln2_when_policy_equals_reference() -> None:
    pol_P = torch.tensor([-3.0, -0.5, -12.25, 0.0], dtype=torch.float64)
    for beta in (0.01, 0.1, 1.0, 50.0):
        out = dpo_pair_losses(pol_P, pol_P.flip(0), pol_P, pol_P.flip(0), beta)
        assert torch.allclose(out.loss_P, torch.full_like(pol_P, math.log(2)), rtol=0, atol=1e-7)
    batch = make_batch(1)
    same_BS = policy_logps(batch).detach()
    out = run(batch, same_BS, ref_token_logps_BS=same_BS, weights=LossWeights(lm=0.0, dpo=1.0))
    assert abs(out.loss.item() - math.log(2)) < 1e-7
    assert out.metrics["dpo_accuracy"][0].item() == 0.0


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_loss_and_gradients_match_naive_loops(reduction: str) -> None:
    batch, w = make_batch(2), LossWeights(lm=0.7, dpo=1.3, rf_nll=0.4)
    out = run(batch, policy_logps(batch), weights=w, config=LossConfig(beta=0.5, dpo_reduction=reduction))
    (grad,) = torch.autograd.grad(out.loss, batch["logits"])
    ref_leaf_BS = batch["ref"].clone().requires_grad_(True)
    ref_out = run(batch, policy_logps(batch), ref_token_logps_BS=ref_leaf_BS)
    assert torch.autograd.grad(ref_out.loss, ref_leaf_BS, allow_unused=True)[0] is None
    naive = naive_terms(batch, 0.5, reduction)
    denoms = {"lm": batch["lm"].sum().item(), "dpo": len(PAIRS),
              "rf_nll": batch["rl"][RF_ROWS].sum().item()}
    want = sum(getattr(w, k) * naive[k] / denoms[k] for k in naive)
    (want_grad,) = torch.autograd.grad(want, batch["logits"])
    assert abs(out.loss.item() - want.item()) < 1e-10
    assert torch.allclose(grad, want_grad, rtol=0, atol=1e-10)
    for k in naive:
        assert abs(out.terms[k].item() - naive[k].item() / denoms[k]) < 1e-10
    assert abs(out.metrics["dpo_loss"][0].item() - naive["dpo"].item()) < 1e-10
    assert out.counts == {"num_lm_tokens": denoms["lm"], "num_pairs": 4.0,
                          "num_rf_tokens": denoms["rf_nll"]}


@pytest.mark.parametrize("term", ["lm", "dpo", "rf_nll"])
def test_each_term_gradient_alone_matches_naive(term: str) -> None:
    batch = make_batch(3)
    weights = LossWeights(**{k: (1.0 if k == term else 0.0) for k in ("lm", "dpo", "rf_nll")})
    out = run(batch, policy_logps(batch), weights=weights, denominators=Denominators(5.0, 2.0, 3.0))
    (grad,) = torch.autograd.grad(out.loss, batch["logits"])
    want = naive_terms(batch, 0.3)[term] / {"lm": 5.0, "dpo": 2.0, "rf_nll": 3.0}[term]
    (want_grad,) = torch.autograd.grad(want, batch["logits"])
    assert torch.allclose(grad, want_grad, rtol=0, atol=1e-10)
    assert grad.abs().sum() > 0


def test_weight_zero_terms_reported_but_not_in_loss() -> None:
    batch = make_batch(4)
    out = run(batch, policy_logps(batch), weights=LossWeights(lm=1.0, dpo=0.0, rf_nll=0.0))
    naive = naive_terms(batch, 0.3)
    assert abs(out.loss.item() - naive["lm"].item() / batch["lm"].sum().item()) < 1e-10
    assert abs(out.metrics["rf_nll"][0].item() - naive["rf_nll"].item()) < 1e-10
    assert abs(out.metrics["dpo_loss"][0].item() - naive["dpo"].item()) < 1e-10
    assert all(not t.requires_grad for pair in out.metrics.values() for t in pair)


def test_metrics_match_naive() -> None:
    batch = make_batch(5)
    out = run(batch, policy_logps(batch), config=LossConfig(beta=0.2))
    with torch.no_grad():
        margins = [0.2 * ((naive_seq(batch, c, "sum", False) - naive_seq(batch, c, "sum", True))
                          - (naive_seq(batch, r, "sum", False) - naive_seq(batch, r, "sum", True)))
                   for c, r in PAIRS]
        chosen = sum(naive_seq(batch, c, "sum", False) for c, _ in PAIRS)
        rejected = sum(naive_seq(batch, r, "sum", False) for _, r in PAIRS)
    m = out.metrics
    assert abs(m["dpo_reward_margin"][0].item() - sum(margins).item()) < 1e-10
    assert m["dpo_accuracy"][0].item() == sum(1 for x in margins if x > 0)
    assert abs(m["chosen_logp"][0].item() - chosen.item()) < 1e-10
    assert abs(m["rejected_logp"][0].item() - rejected.item()) < 1e-10
    assert m["lm_nll"][1].item() == batch["lm"].sum().item() and m["dpo_loss"][1].item() == 4


@pytest.mark.parametrize("pieces", [1, 2, 4])
def test_micro_batch_split_invariance(pieces: int) -> None:
    batch = make_batch(6)
    full = run(batch, policy_logps(batch))
    (full_grad,) = torch.autograd.grad(full.loss, batch["logits"])
    logps_BS, size = policy_logps(batch), B // pieces
    parts = []
    for k in range(pieces):
        lo, hi = k * size, (k + 1) * size
        local = lambda ids: rows([i - lo for i in ids if lo <= i < hi])  # noqa: E731
        parts.append(dict(token_logps_BS=logps_BS[lo:hi], ref_token_logps_BS=batch["ref"][lo:hi],
                          lm_mask_BS=batch["lm"][lo:hi], rl_mask_BS=batch["rl"][lo:hi],
                          chosen_rows_P=local([c for c, _ in PAIRS]),
                          rejected_rows_P=local([r for _, r in PAIRS]), rf_rows_R=local(RF_ROWS)))
    total = Denominators(0.0, 0.0, 0.0)
    for p in parts:
        total = total + count_local(p["lm_mask_BS"], p["rl_mask_BS"], p["chosen_rows_P"], p["rf_rows_R"])
    split_loss = sum(run(batch, **p, denominators=total).loss for p in parts)
    (split_grad,) = torch.autograd.grad(split_loss, batch["logits"])
    assert abs(split_loss.item() - full.loss.item()) < 1e-12
    assert torch.allclose(split_grad, full_grad, rtol=0, atol=1e-12)


def test_mean_reduction_closed_form() -> None:
    pol_BS = torch.tensor([[-1.0, -2.0, -3.0, 9.0], [-0.5, -0.25, 7.0, 7.0]], dtype=torch.float64)
    ref_BS = torch.tensor([[-2.0, -2.0, -2.0, 9.0], [-1.0, -1.0, 7.0, 7.0]], dtype=torch.float64)
    mask_BS = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float64)
    assert sequence_logps(pol_BS, mask_BS, "mean").tolist() == [-2.0, -0.375]
    out = run({"ref": ref_BS, "lm": torch.zeros_like(mask_BS), "rl": mask_BS}, pol_BS,
              chosen_rows_P=rows([0]), rejected_rows_P=rows([1]), rf_rows_R=rows([]),
              config=LossConfig(beta=2.0, dpo_reduction="mean"))
    x = 2.0 * ((-2.0 - -2.0) - (-0.375 - -1.0))
    assert abs(out.loss.item() - math.log1p(math.exp(-x))) < 1e-12


def test_reference_free_closed_form() -> None:
    pc_P = torch.tensor([-4.0, -1.0, -30.0], dtype=torch.float64)
    pr_P = torch.tensor([-5.0, -0.5, -2.0], dtype=torch.float64)
    zeros_P = torch.zeros(3, dtype=torch.float64)
    out = dpo_pair_losses(pc_P, pr_P, zeros_P, zeros_P, beta=0.7)
    want = [math.log1p(math.exp(-0.7 * (c - r))) for c, r in zip(pc_P.tolist(), pr_P.tolist())]
    assert torch.allclose(out.loss_P, torch.tensor(want, dtype=torch.float64), rtol=0, atol=1e-12)
    # Large negative margin: must stay finite (stable logsigmoid), ~ -margin.
    far = dpo_pair_losses(torch.tensor([-1e4]), torch.tensor([0.0]), torch.zeros(1), torch.zeros(1), 1.0)
    assert far.loss_P.item() == pytest.approx(1e4)


def test_padding_rows_and_positions_do_not_change_loss() -> None:
    batch = make_batch(7)
    logps_BS = policy_logps(batch)
    base = run(batch, logps_BS)
    pad = lambda t, fill: torch.cat([torch.cat([t, torch.full((B, 3), fill, dtype=t.dtype)], 1),  # noqa: E731
                                     torch.full((2, S + 3), fill, dtype=t.dtype)], 0)
    padded = {"ref": pad(batch["ref"], 123.0), "lm": pad(batch["lm"], 0.0), "rl": pad(batch["rl"], 0.0)}
    out = run(padded, pad(logps_BS, -1e30))
    assert out.loss.item() == pytest.approx(base.loss.item(), abs=1e-12)
    assert out.counts == base.counts


def test_unused_nan_does_not_poison_loss_or_grad() -> None:
    batch = make_batch(8)
    clean_BS = policy_logps(batch).detach()
    unused_BS = (batch["lm"] == 0) & (batch["rl"] == 0)
    dirty_BS = torch.where(unused_BS, float("nan"), clean_BS).requires_grad_(True)
    ref_BS = torch.where(batch["rl"] == 0, float("-inf"), batch["ref"])
    out = run(batch, dirty_BS, ref_token_logps_BS=ref_BS)
    assert out.loss.item() == pytest.approx(run(batch, clean_BS).loss.item(), abs=1e-12)
    out.loss.backward()
    assert torch.isfinite(dirty_BS.grad).all() and (dirty_BS.grad[unused_BS] == 0).all()


@pytest.mark.parametrize("weights", [LossWeights(rf_nll=1.0), LossWeights(lm=0.0, dpo=0.0)])
def test_all_padding_micro_batch_backward_gives_zero_grad(weights: LossWeights) -> None:
    # Every micro-batch must be able to call backward(), even with nothing to learn from.
    logps_BS = torch.randn(2, 4, dtype=torch.float64, requires_grad=True)
    zeros_BS, empty = torch.zeros(2, 4, dtype=torch.float64), rows([])
    out = mixed_loss(logps_BS, zeros_BS, zeros_BS, zeros_BS, empty, empty, empty,
                     weights=weights, denominators=Denominators(10.0, 0.0, 0.0),
                     config=LossConfig())
    out.loss.backward()
    assert out.loss.item() == 0.0 and (logps_BS.grad == 0).all()
    assert out.counts == {"num_lm_tokens": 0.0, "num_pairs": 0.0, "num_rf_tokens": 0.0}


def test_small_helpers_match_hand_values() -> None:
    logps_BS = torch.tensor([[-1.0, -2.0, float("nan")], [-4.0, -8.0, -16.0]])
    mask_BS = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
    assert sequence_logps(logps_BS, mask_BS).tolist() == [-3.0, -24.0]
    assert token_nll_sum(logps_BS, mask_BS).item() == 27.0


def _bad(match: str, error: type[Exception] = ValueError, **over) -> None:
    """Expect `error` from mixed_loss on batch 9 with some arguments replaced."""
    batch = make_batch(9)
    logps_BS = over.pop("token_logps_BS", policy_logps(batch).detach())
    with pytest.raises(error, match=match):
        run(batch, logps_BS, denominators=Denominators(100.0, 100.0, 100.0), **over)


def test_validation_errors() -> None:
    batch = make_batch(9)
    _bad(r"token_logps_BS and lm_mask_BS must have the same shape, but got \(8, 10\) and \(8, 9\)",
         lm_mask_BS=batch["lm"][:, :9])
    _bad("chosen_rows_P and rejected_rows_P must have the same length", rejected_rows_P=rows([1, 2]))
    _bad(r"rf_rows_R must hold row indices in \[0, 8\), but rf_rows_R\[1\] is 8", rf_rows_R=rows([0, 8]))
    _bad(r"chosen_rows_P must hold row indices in \[0, 8\)", chosen_rows_P=rows([0, -1, 4, 7]))
    _bad("must differ within a pair, but pair 0 uses row 1", chosen_rows_P=rows([1, 3, 4, 7]))
    empty_BS = batch["rl"].clone()
    empty_BS[3] = 0
    _bad("empty suffix mask in row 3", rl_mask_BS=empty_BS)
    _bad("empty suffix mask in row 6", rf_rows_R=rows([6]), rl_mask_BS=torch.where(
        torch.arange(B)[:, None] == 6, 0.0, batch["rl"]).to(torch.float64),
        chosen_rows_P=rows([0]), rejected_rows_P=rows([1]))
    half_BS = batch["lm"].clone()
    half_BS[2, 1] = 0.5
    _bad(r"lm_mask_BS must contain only 0 and 1, but has 0.5 at \(row 2, position 1\)", lm_mask_BS=half_BS)
    with pytest.raises(ValueError, match="denominators.num_pairs must be > 0"):
        run(batch, policy_logps(batch), denominators=Denominators(100.0, 0.0, 100.0))
    with pytest.raises(ValueError, match="reduction must be one of"):
        sequence_logps(batch["ref"], batch["rl"], "max")
    with pytest.raises(ValueError, match="row 0 is empty"):
        sequence_logps(batch["ref"], torch.zeros_like(batch["rl"]), "mean")


def test_non_finite_used_positions_raise() -> None:
    batch = make_batch(9)
    logps_BS = policy_logps(batch).detach()
    bad_BS = logps_BS.clone()
    bad_BS[1, 0] = float("nan")  # row 1 position 0 is an LM position
    _bad(r"token_logps_BS .* nan at \(row 1, position 0\)", NonFiniteLogProbsError, token_logps_BS=bad_BS)
    pos = int(batch["rl"][2].nonzero()[0, 0])
    bad_ref_BS = batch["ref"].clone()
    bad_ref_BS[2, pos] = float("inf")
    with pytest.raises(NonFiniteLogProbsError, match=rf"ref_token_logps_BS .* \(row 2, position {pos}\)"):
        run(batch, logps_BS, ref_token_logps_BS=bad_ref_BS)
    assert issubclass(NonFiniteLogProbsError, ValueError)


def test_config_dataclass_validation() -> None:
    with pytest.raises(ValueError, match="LossWeights.dpo must be a finite number >= 0, but got -1.0"):
        LossWeights(dpo=-1.0)
    with pytest.raises(ValueError, match="LossConfig.beta must be a finite number > 0"):
        LossConfig(beta=0.0)
    with pytest.raises(ValueError, match="LossConfig.dpo_reduction must be one of"):
        LossConfig(dpo_reduction="max")
    with pytest.raises(ValueError, match="Denominators.num_pairs"):
        Denominators(1.0, -2.0, 0.0)
    with pytest.raises(ValueError, match="beta must be a finite number > 0, but got -0.1"):
        dpo_pair_losses(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), -0.1)
    with pytest.raises(TypeError):
        LossWeights(1.0)  # type: ignore[misc]  # keyword-only
