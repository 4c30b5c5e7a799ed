"""row_context: the one left-truncation rule of rows, reference passes and evaluation."""

from __future__ import annotations

from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group
from rlpt_plugin.rl.context import row_context
from rlpt_plugin.rl.packing import PackSpec, pack_step
from rlpt_plugin.rl.pool import select


def test_the_end_of_the_prefix_is_kept():
    assert row_context([1, 2, 3, 4, 5], 3, seq_length=6) == (2, 3, 4, 5)  # 6 + 1 - 3 = 4 tokens
    assert row_context([1, 2], 3, seq_length=6) == (1, 2)  # shorter: all of it
    assert row_context([1, 2, 3], 7, seq_length=6) == ()  # the continuation fills the row
    assert row_context([1, 2, 3], 9, seq_length=6) == ()


def test_training_rows_use_the_same_context():
    group = build_group(PoolInput(group_id=0, prefix=list(range(10, 20)), original=[1, 2, 3], rewrite=None,
                                  rollouts=[[4, 5, 6], [7]]), PoolSpec(original=False), scores=[1.0, 0.0])
    spec = PackSpec(seq_length=8, micro_batch_size=4, num_microbatches=1, use_rf_nll=True)
    (mb,) = pack_step([group], [select(group)], spec)
    context = list(row_context(group.prefix, 3, 8))
    assert context == list(range(14, 20))
    assert mb.tokens_BS[0].tolist() == [*context, 1, 2]  # the LM row: context + original, shifted
    assert mb.labels_BS[0].tolist()[len(context) - 1:] == [1, 2, 3]
