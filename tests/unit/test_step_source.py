"""Step-building checks that need no processes."""

from __future__ import annotations

import pytest

from rlpt_plugin.megatron.step.step_source import StepSource
from rlpt_plugin.rl.packing import PackSpec, pack_step
from rlpt_plugin.rl.pool import select_all
from rlpt_plugin.rl.synthetic import SyntheticGroups


def test_token_ids_outside_the_model_vocabulary_name_the_group():
    source = SyntheticGroups(vocab_size=300)
    groups = [source.group(i) for i in range(4)]
    spec = PackSpec(seq_length=24, micro_batch_size=12, num_microbatches=1)
    batches = pack_step(groups, select_all(groups), spec)
    step_source = StepSource(source.group, groups_per_step=4, spec=spec, vocab_size=128)
    with pytest.raises(ValueError, match=r"token id \d+ in group \d is outside the model's vocabulary of 128"):
        step_source._check_vocab(batches)
    StepSource(source.group, groups_per_step=4, spec=spec, vocab_size=300)._check_vocab(batches)



def test_think_rows_are_packed_after_the_groups_and_counted_in_the_lm_term(monkeypatch):
    from rlpt_plugin.megatron.step import step_source
    from rlpt_plugin.rl.packing import Row

    # one data-parallel rank, no process group: the step's share is all of it, sums are local
    monkeypatch.setattr(step_source.parallel, "dp_share", lambda step, n: range(step * n, (step + 1) * n))
    monkeypatch.setattr(step_source.parallel, "all_reduce_sum_over_dp", lambda t: t)
    source = SyntheticGroups(vocab_size=128)
    spec = PackSpec(seq_length=24, micro_batch_size=14, num_microbatches=1)

    def think(i: int) -> Row:
        return Row(group_id=i, tokens=(100 + i, 3, 4, 5, 6), candidate_length=4, lm=True)

    plain = StepSource(source.group, groups_per_step=4, spec=spec, vocab_size=128)
    with_think = StepSource(source.group, groups_per_step=4, spec=spec, vocab_size=128,
                            think_rows=think, think_rows_per_step=2)
    plain.prepare(1)
    with_think.prepare(1)
    total = with_think.last_denominators.num_lm_tokens
    assert total == plain.last_denominators.num_lm_tokens + 2 * 4  # every label of a think row
    (mb,) = list(with_think._queue)
    extras = {name: (s, c) for name, s, c in mb.extras}
    assert extras["think_lm_token_share"] == (8.0, total) and "job_lm_token_share" not in extras
    heads = [tuple(r[:4]) for r in mb.batch.tokens_BS.tolist()]  # inputs: the row without its last token
    rows = [heads.index((102, 3, 4, 5)), heads.index((103, 3, 4, 5))]  # step 1: global think rows 2, 3
    assert rows == [mb.batch.num_real_rows - 2, mb.batch.num_real_rows - 1]  # after the groups' rows
    assert mb.batch.labels_BS[rows[0], :4].tolist() == [3, 4, 5, 6]
    assert mb.batch.lm_mask_BS[rows].sum(dim=1).tolist() == [4.0, 4.0]
    rl_rows = {*mb.batch.chosen_rows_P.tolist(), *mb.batch.rejected_rows_P.tolist(), *mb.batch.rf_rows_R.tolist()}
    assert not rl_rows & set(rows)  # LM-only: no RL term reads them
    with pytest.raises(ValueError, match="think_rows_per_step"):
        StepSource(source.group, groups_per_step=4, spec=spec, think_rows=think, think_rows_per_step=0)
