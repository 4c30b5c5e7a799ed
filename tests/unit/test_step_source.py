"""Step-building checks that need no processes."""

from __future__ import annotations

import pytest

from rlpt_plugin.megatron.step_source import StepSource
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
