"""Candidate pool assembly (pure)."""

from __future__ import annotations

import pytest

from rlpt_plugin.rl.candidates import PoolInput, PoolSpec, build_group, pool_candidates
from rlpt_plugin.rl.pool import CandidateKind, select

ITEM = PoolInput(group_id=7, prefix=[1, 2, 3], original=[4, 5], rewrite=[6, 7], rollouts=[[8, 9], [], [10]],
                 original_logps=[-1.0, -2.0], rewrite_logps=[-3.0, -4.0],
                 rollout_logps=[[-5.0, -6.0], [], [-7.0]])


def test_pool_order_and_kinds_follow_the_spec():
    cands, kinds, logps = pool_candidates(ITEM, PoolSpec(original=True, rewrite=True, rollouts=True))
    assert cands == [[4, 5], [6, 7], [8, 9], [10]]  # the empty rollout (immediate EOS) is left out
    assert kinds == [CandidateKind.ORIGINAL, CandidateKind.REWRITE, CandidateKind.ROLLOUT, CandidateKind.ROLLOUT]
    assert logps == [[-1.0, -2.0], [-3.0, -4.0], [-5.0, -6.0], [-7.0]]
    cands, kinds, _ = pool_candidates(ITEM, PoolSpec(original=False, rewrite=False, rollouts=True))
    assert cands == [[8, 9], [10]] and set(kinds) == {CandidateKind.ROLLOUT}
    no_rewrite = PoolInput(group_id=1, prefix=[1], original=[2], rewrite=None, rollouts=[[3]])
    assert pool_candidates(no_rewrite, PoolSpec(rewrite=True))[0] == [[2], [3]]


def test_group_carries_scores_and_reference_logps_and_ties_favour_the_corpus():
    group = build_group(ITEM, PoolSpec(rewrite=True), scores=[1.0, 0.5, 1.0, 0.0])
    assert group.ref_logps == ((-1.0, -2.0), (-3.0, -4.0), (-5.0, -6.0), (-7.0,))
    sel = select(group)
    assert (sel.chosen, sel.rejected) == (0, 3)  # original and rollout tie at 1.0: original wins
    assert build_group(ITEM, PoolSpec(), scores=None).scores is None
    with pytest.raises(ValueError, match="3 scores for 3 candidates|2 scores for 3 candidates"):
        build_group(ITEM, PoolSpec(), scores=[1.0, 0.0])
    with pytest.raises(ValueError, match="at least one of"):
        PoolSpec(original=False, rewrite=False, rollouts=False)
