"""The rollout sampler: KV cache == recompute, shared prefill == per-row prefill, TP2/PP2 ==
TP1, recorded log-probs == the training forward's, EOS and vocabulary handling, length buckets."""

from __future__ import annotations

import pytest
import torch

from tests.distributed.harness import run_distributed
from tests.distributed.rollout_cases import PREFIXES, SPREAD, run_rollout_cases, training_logps
from tests.distributed.tiny_gpt import VOCAB

pytestmark = pytest.mark.distributed
CASES = [dict(), dict(cache=False), dict(share=False), dict(eos=50), dict(temperature=0.7, top_p=0.5),
         dict(temperature=0.7, top_p=0.5, cache=False), dict(buckets=False),
         dict(spread=True), dict(spread=True, cache=False), dict(spread=True, buckets=False),
         dict(shared_kv=False), dict(spread=True, shared_kv=False), dict(eos=50, shared_kv=False),
         dict(temperature=0.7, top_p=0.5, shared_kv=False), dict(groups=2, spread=True),
         dict(groups=2, spread=True, shared_kv=False), dict(spread=True, buckets=False, shared_kv=False)]


@pytest.fixture(scope="module")
def single(tmp_path_factory) -> list[dict]:
    (res,) = run_distributed(run_rollout_cases, 1, tmp_path_factory.mktemp("ro1"), CASES)
    return res


def _close(a: list, b: list, atol: float = 1e-5) -> None:
    torch.testing.assert_close(torch.tensor([x for p in a for s in p for x in s]),
                               torch.tensor([x for p in b for s in p for x in s]), atol=atol, rtol=0)


def test_kv_cache_and_shared_prefill_change_nothing(single):
    base, no_cache, unshared = single[0], single[1], single[2]
    assert no_cache["tokens"] == base["tokens"] and unshared["tokens"] == base["tokens"]
    _close(no_cache["logps"], base["logps"])
    _close(unshared["logps"], base["logps"])
    assert base["forward_tokens"] < unshared["forward_tokens"] < no_cache["forward_tokens"]
    filtered, filtered_no_cache = single[4], single[5]
    assert filtered["tokens"] == filtered_no_cache["tokens"]


def test_shared_kv_samples_what_megatrons_static_cache_samples_from_one_prefix_copy(single):
    """The K rollouts reading one copy of their prefix's KV entries (keys cached after RoPE),
    prefixes of different lengths left-padded into one prefill, give the tokens and log-probs of
    megatron's per-row cache (shared prefill of the shortest part, then forced steps), with spread
    prefixes (megatron's length buckets), EOS and top-p too, push fewer tokens through the model
    (no forced steps) and hold less KV."""
    for shared, megatron in ((0, 10), (7, 11), (3, 12), (4, 13), (14, 15)):  # 14, 15: grouped-query
        assert single[shared]["kv_path"] == "shared" and single[megatron]["kv_path"] == "megatron"
        assert single[shared]["tokens"] == single[megatron]["tokens"], single[shared]["case"]
        _close(single[shared]["logps"], single[megatron]["logps"])
        if not single[shared]["case"].get("spread"):  # PREFIXES: one static batch either way
            assert single[shared]["forward_tokens"] < single[megatron]["forward_tokens"], single[shared]["case"]
    # One static batch each: 4 prefixes padded to the longest (PREFIXES 6, SPREAD 20), then N - 1 = 5
    # decode steps of the 12 rows; megatron's: 4 x 3 + 12 x (6 - 3 + 5) = 108 for PREFIXES.
    assert single[0]["forward_tokens"] == 4 * 6 + 12 * 5 and single[10]["forward_tokens"] == 108
    # SPREAD (3, 14, 4, 20): one padded prefill of 4 x 20 and 5 steps (6 forwards) where megatron's
    # buckets push fewer tokens (106) in 3 static batches (18 forwards).
    assert single[7]["forward_tokens"] == single[9]["forward_tokens"] == 4 * 20 + 12 * 5
    assert single[11]["forward_tokens"] == 106
    # PREFIXES: one batch of 4 prefixes, K = 3, N = 6, prefixes 3-6 tokens: the shared cache holds
    # each prefix's shortest part once and each row its own <= 9 tokens, megatron's 12 rows x 12.
    assert single[0]["kv_cache_bytes"] < single[10]["kv_cache_bytes"]
    assert single[1]["kv_path"] == "recompute" and single[2]["kv_path"] == "megatron"


def test_shapes_vocabulary_and_distinct_samples(single):
    base = single[0]
    assert len(base["tokens"]) == len(PREFIXES)
    for samples, logps in zip(base["tokens"], base["logps"]):
        assert len(samples) == 3 and all(len(s) == 6 for s in samples)
        assert all(0 <= t < VOCAB - 4 for s in samples for t in s)  # padded ids never sampled
        assert all(len(lp) == len(s) and all(x < 0 for x in lp) for s, lp in zip(samples, logps))
    assert len({tuple(s) for samples in base["tokens"] for s in samples}) > len(PREFIXES)


def test_eos_ends_a_rollout(single):
    with_eos = single[3]
    ended = [s for samples in with_eos["tokens"] for s in samples if 50 in s]
    for s in ended:
        assert s[-1] == 50 and s.count(50) == 1
    lengths = [len(s) for samples in with_eos["tokens"] for s in samples]
    assert all(1 <= n <= 6 for n in lengths)


def test_recorded_logps_equal_the_training_forward(single, tmp_path):
    base = single[0]
    (reference,) = run_distributed(training_logps, 1, tmp_path, base["tokens"])
    _close(base["logps"], reference, atol=2e-5)


def test_length_buckets():
    from rlpt_plugin.megatron.candidates.rollout import length_buckets

    assert length_buckets([3, 14, 4, 20], 6) == [[0, 2], [1], [3]]
    assert length_buckets([6, 3, 5, 3], 6) == [[0, 1, 2, 3]]  # one batch, original order
    assert length_buckets([10, 4, 9, 16, 15], 6) == [[1, 2], [0, 4], [3]]  # 4, 9 | 10, 15 | 16 (16 - 10 >= 6)
    assert length_buckets([], 6) == []


def test_one_bucket_samples_what_one_static_batch_does(single):
    assert single[6]["tokens"] == single[0]["tokens"] and single[6]["logps"] == single[0]["logps"]


def test_length_buckets_cut_forced_steps_and_change_no_probability(single, tmp_path):
    """Widely spread prefix lengths on megatron's static context: separate static batches push
    fewer tokens through the model than one batch (whose longer prefixes feed their tokens in
    forced steps), sample the same tokens, the KV cache still equals recomputation, and the
    recorded log-probs are still the training forward's."""
    bucketed, recomputed, one_batch = single[11], single[8], single[16]
    assert recomputed["tokens"] == bucketed["tokens"] == one_batch["tokens"] == single[7]["tokens"]
    _close(recomputed["logps"], bucketed["logps"])
    _close(one_batch["logps"], bucketed["logps"])
    assert bucketed["forward_tokens"] < one_batch["forward_tokens"]
    for run in (bucketed, one_batch, single[7]):
        assert [len(samples) for samples in run["tokens"]] == [3] * len(SPREAD)
        assert all(len(s) == 6 for samples in run["tokens"] for s in samples)
    (reference,) = run_distributed(training_logps, 1, tmp_path, bucketed["tokens"], SPREAD)
    _close(bucketed["logps"], reference, atol=2e-5)
    _close(single[7]["logps"], reference, atol=2e-5)  # shared KV, left-padded prefill


def test_tp2_and_pp2_sample_what_tp1_samples(single, tmp_path):
    results = run_distributed(run_rollout_cases, 2, tmp_path, [dict(tp=2), dict(pp=2), dict(pp=2, eos=50),
                                                               dict(pp=2, spread=True), dict(tp=2, groups=2, spread=True)])
    for rank in results:
        for i, want in enumerate((single[0], single[0], single[3], single[7], single[15])):
            assert rank[i]["tokens"] == want["tokens"], rank[i]["case"]
            assert rank[i]["kv_path"] == "shared", rank[i]["case"]
    _close(results[0][0]["logps"], single[0]["logps"])  # TP2: every rank has the logits
    _close(results[1][1]["logps"], single[0]["logps"])  # PP2: the last stage records them
