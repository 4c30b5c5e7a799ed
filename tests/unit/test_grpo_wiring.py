"""Dr. GRPO through config, packing and the step source: setup errors that name the field,
GRPO rows and advantages in unpacked and prefix-shared micro-batches, the global count."""

from __future__ import annotations

import pytest
import torch

from rlpt_plugin.config import RLPTConfig, TermWeight
from rlpt_plugin.megatron.step.step_source import StepSource
from rlpt_plugin.rl.losses import Denominators, LossConfig, LossWeights, mixed_loss
from rlpt_plugin.rl.packing import PackSpec, pack_step
from rlpt_plugin.rl.pool import CandidateGroup, CandidateKind, select_all
from rlpt_plugin.rl.step import batch_segments, local_denominators
from rlpt_plugin.rl.synthetic import SyntheticGroups

O, R = CandidateKind.ORIGINAL, CandidateKind.ROLLOUT


def grpo_config() -> RLPTConfig:
    cfg = RLPTConfig()
    cfg.data.stores, cfg.data.tokenizer = ["/data/store"], "/data/tok"
    cfg.judge.backend = "world"
    cfg.loss.selection, cfg.loss.dpo, cfg.loss.grpo = "grpo", TermWeight(start=0.0), TermWeight(start=1.0)
    return cfg


def test_a_grpo_config_is_valid_and_counts_as_rl():
    cfg = grpo_config()
    assert cfg.errors() == [] and cfg.loss.has_rl_terms()
    assert cfg.loss.weights().at(0).grpo == 1.0 and cfg.loss.loss_config().grpo_clip == 0.2
    cfg.candidates.original = False  # a rollouts-only pool is a GRPO pool too
    assert cfg.errors() == []


@pytest.mark.parametrize("change, field", [
    (dict(selection="dpo"), "rlpt.loss.grpo"),  # weight without GRPO items: silently nothing
    (dict(reference="frozen"), "rlpt.loss.reference"),
    (dict(reference="none"), "rlpt.loss.reference"),
    (dict(grpo_clip=1.0), "rlpt.loss.grpo_clip"),
    (dict(grpo_clip=0.0), "rlpt.loss.grpo_clip"),
    (dict(rf_nll=TermWeight(start=1.0)), "rlpt.loss.selection"),  # no best candidate under grpo
])
def test_bad_grpo_loss_settings_name_their_field(change, field):
    cfg = grpo_config()
    for name, value in change.items():
        setattr(cfg.loss, name, value)
    assert any(f"`{field}`" in e for e in cfg.errors()), cfg.errors()


def test_fewer_than_two_rollouts_is_an_error_naming_the_field():
    cfg = grpo_config()
    cfg.candidates.num_rollouts = 1
    assert any("rlpt.candidates.num_rollouts" in e and "fewer than 2" in e for e in cfg.errors())
    cfg = grpo_config()
    cfg.candidates.rollouts = False
    assert any("rlpt.candidates.num_rollouts" in e for e in cfg.errors())
    cfg = grpo_config()
    cfg.data.stores, cfg.data.tokenizer, cfg.data.source = [], "", "synthetic"
    cfg.data.synthetic.num_rollouts = 1
    assert any("rlpt.data.synthetic.num_rollouts" in e for e in cfg.errors())


def pools() -> list[CandidateGroup]:
    ref = lambda n: tuple(-0.1 * (j + 1) for j in range(n))  # noqa: E731
    return [
        CandidateGroup(prefix=(1, 2, 3), candidates=((4, 5), (6, 7, 8), (9,), (10, 11)), kinds=(O, R, R, R),
                       scores=(1.0, 0.2, 0.8, 0.5), ref_logps=(ref(2), ref(3), ref(1), ref(2)), group_id=0),
        CandidateGroup(prefix=(2, 3), candidates=((4,), (5, 6)), kinds=(R, R), scores=(0.3, 0.3),  # tied
                       ref_logps=(ref(1), ref(2)), group_id=1, lm_original=(7, 8)),
        CandidateGroup(prefix=(5, 6, 7), candidates=((8, 9), (1, 2)), kinds=(R, R), scores=(0.0, 1.0),
                       ref_logps=(ref(2), ref(2)), group_id=2, lm_original=(3,)),
    ]


def test_packing_carries_every_rollout_with_its_advantage():
    groups = pools()
    spec = PackSpec(seq_length=8, micro_batch_size=8, num_microbatches=1, use_dpo=False, use_grpo=True,
                    ref_from_rollout=True)
    (mb,) = pack_step(groups, select_all(groups, rule="grpo"), spec)
    mb.validate()
    # group 0: its 3 rollouts (mean 0.5: A = -0.3, 0.3, 0.0), not the original; group 1 tied: none
    rows = mb.grpo_rows_G.tolist()
    assert [int(mb.group_ids_B[b]) for b in rows] == [0, 0, 0, 2, 2]
    assert mb.grpo_adv_G.tolist() == pytest.approx([-0.3, 0.3, 0.0, -0.5, 0.5])
    assert mb.chosen_rows_P.numel() == 0 and mb.rf_rows_R.numel() == 0
    # old log-probs are the rollout-time ones, at the item's label positions
    b = rows[0]
    assert mb.ref_logps_BS[b][mb.rl_mask_BS[b] != 0].tolist() == pytest.approx([-0.1, -0.2, -0.3])
    assert local_denominators([mb]).num_grpo_tokens == 3 + 1 + 2 + 2 + 2


def test_prefix_shared_grpo_step_equals_unpacked():
    """Same loss and gradient from one shared row per pool as from one row per candidate, with
    per-token log-probs that depend only on (group, candidate, position)."""
    groups = [SyntheticGroups(vocab_size=50, num_rollouts=4).group(i) for i in range(6)]
    sel = select_all(groups, rule="grpo")
    kw = dict(seq_length=20, micro_batch_size=30, num_microbatches=1, use_dpo=False, use_grpo=True)
    (plain,) = pack_step(groups, sel, PackSpec(**kw))
    (shared,) = pack_step(groups, sel, PackSpec(**kw, shared_rows=True))
    assert shared.num_real_rows < plain.num_real_rows and shared.grpo_rows_G.numel() == plain.grpo_rows_G.numel()
    table = torch.randn(50, 64, dtype=torch.float64, requires_grad=True)

    def step(mb):
        lp = -torch.nn.functional.softplus(table[mb.labels_BS, mb.position_ids_BS.clamp(max=63)])
        old = lp.detach() + 0.3 * torch.cos(mb.labels_BS.double())
        den = Denominators(*(float(v) for v in (local_denominators([mb]).num_lm_tokens, 0, 0)),
                           num_grpo_tokens=local_denominators([mb]).num_grpo_tokens)
        out = mixed_loss(lp, old, mb.lm_mask_BS, mb.rl_mask_BS, mb.chosen_rows_P, mb.rejected_rows_P,
                         mb.rf_rows_R, weights=LossWeights(lm=1.0, dpo=0.0, grpo=1.0), denominators=den,
                         config=LossConfig(), segments=batch_segments(mb), grpo_rows_G=mb.grpo_rows_G,
                         grpo_advantages_G=mb.grpo_adv_G)
        return out, torch.autograd.grad(out.loss, table)[0]

    (a, ga), (b, gb) = step(plain), step(shared)
    assert abs(a.loss.item() - b.loss.item()) < 1e-12 and a.terms["grpo"].item() != 0
    assert a.counts == b.counts
    assert torch.allclose(ga, gb, rtol=0, atol=1e-12)


def test_step_source_reports_tied_groups_and_sums_the_grpo_count(monkeypatch):
    from rlpt_plugin.megatron import parallel

    monkeypatch.setattr(parallel, "dp_share", lambda step, n: range(step * n, (step + 1) * n))  # one rank
    groups = pools()
    spec = PackSpec(seq_length=8, micro_batch_size=4, num_microbatches=2, use_dpo=False, use_grpo=True)
    source = StepSource(lambda i: groups[i], groups_per_step=3, spec=spec, rule="grpo")
    source.prepare(0)
    assert source.last_denominators.num_grpo_tokens == 10.0
    assert source.last_stats.num_grpo_groups == 2 and source.last_stats.skipped == {"all_tied": 1}
    extras = dict((n, (s, c)) for n, s, c in next(source).extras)
    assert extras["grpo_tied_group_rate"] == (1.0, 3.0) and "rollout_chosen_rate" not in extras


def test_the_plan_counts_one_row_per_rollout_and_the_setup_check_uses_it():
    from rlpt_plugin.plan import max_rows_per_microbatch
    from rlpt_plugin.plan_config import plan_from_config

    cfg = grpo_config()
    cfg.candidates.num_rollouts = 3
    p = plan_from_config(cfg, seq_length=32, suffix_length=8)
    assert p.lm_rows == 8 and p.rl_rows == 8 * 3 and p.rollouts == 8 * 3 and p.judge_calls > 0
    # 4 pools per micro-batch: 4 x (LM row + 3 rollouts); under dpo it is 4 x (LM + 2)
    assert max_rows_per_microbatch(p, dp_size=1, num_microbatches=2) == 16
    cfg.loss.selection, cfg.loss.dpo, cfg.loss.grpo = "dpo", TermWeight(start=1.0), TermWeight(start=0.0)
    assert max_rows_per_microbatch(plan_from_config(cfg, seq_length=32, suffix_length=8),
                                   dp_size=1, num_microbatches=2) == 12
