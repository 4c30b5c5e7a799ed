"""The rewritten store and the Megatron dataset over it."""

from __future__ import annotations

import gc

import pytest

from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore, StoreMismatchError, write_store
from tests.distributed.harness import run_distributed
from tests.rewrite.store_cases import N, dataset_case, manifest, records, store_dir


def test_roundtrip_alignment_and_statuses(tmp_path):
    recs = records(11)
    info = write_store(tmp_path / "s", recs, manifest())
    store = RewrittenStore(tmp_path / "s", expect_tokenizer="f" * 64, expect_suffix_length=N)
    assert len(store) == 11 and info["num_windows"] == 11
    assert info["counts"] == {"rewritten": 3, "copied": 2, "refused": 2, "empty": 2, "failed": 2}
    for i, (doc, win, prefix, original, rewrite, status) in enumerate(recs):
        w = store[i]
        assert (w.doc_index, w.window_index, w.status) == (doc, win, status)
        assert w.prefix.tolist() == prefix and w.original.tolist() == original
        assert (w.rewrite is None) == (status in ("refused", "empty", "failed"))
        if w.rewrite is not None:
            assert w.rewrite.tolist() == rewrite
    store.verify()


def test_a_window_outlives_its_store(tmp_path):
    """Windows hold their own ids: a view into the store's mmap would read freed memory (a
    segfault, seen with the think store) once the store object is collected."""
    recs = records(5)
    write_store(tmp_path / "s", recs, manifest())
    store = RewrittenStore(tmp_path / "s")
    windows = [store[i] for i in range(len(store))]
    assert all(w.prefix.base is None and w.original.base is None for w in windows)  # owned, not views
    del store
    gc.collect()
    assert [w.prefix.tolist() for w in windows] == [r[2] for r in recs]


def test_same_input_gives_byte_identical_files(tmp_path):
    write_store(tmp_path / "a", records(9), manifest())
    write_store(tmp_path / "b", records(9), manifest())
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_mismatched_tokenizer_or_suffix_length_is_an_error(tmp_path):
    write_store(tmp_path / "s", records(3), manifest())
    with pytest.raises(StoreMismatchError, match="tokenizer fingerprint ffffffffffff.* differs"):
        RewrittenStore(tmp_path / "s", expect_tokenizer="a" * 64)
    with pytest.raises(StoreMismatchError, match="suffix length N = 4 differs from the run's 128"):
        RewrittenStore(tmp_path / "s", expect_suffix_length=128)
    with pytest.raises(StoreMismatchError, match="not a rewritten store"):
        RewrittenStore(tmp_path)


def test_corrupted_copy_fails_verification(tmp_path):
    write_store(tmp_path / "s", records(3), manifest())
    with (tmp_path / "s" / "rewrite.bin").open("r+b") as f:
        f.write(b"\x00\x01")
    with pytest.raises(StoreMismatchError, match="checksum mismatch"):
        RewrittenStore(tmp_path / "s").verify()


def test_bad_records_are_rejected(tmp_path):
    bad_length = [(0, 0, [1, 2], [1, 2, 3], [], "failed")]
    with pytest.raises(ValueError, match="original suffix must have 4 tokens, but has 3"):
        write_store(tmp_path / "s", bad_length, manifest())
    failed_with_tokens = [(0, 0, [1, 2], [1, 2, 3, 4], [5], "failed")]
    with pytest.raises(ValueError, match="a failed rewrite must be empty"):
        write_store(tmp_path / "s", failed_with_tokens, manifest())


@pytest.mark.distributed
def test_megatron_dataset_is_deterministic_and_blends(tmp_path):
    a, b = store_dir(tmp_path, "a", 10), store_dir(tmp_path, "b", 10, seed=3)
    (res,) = run_distributed(dataset_case, 1, tmp_path / "w", str(a), str(b))
    assert res["len"] == 12  # more samples than windows: a second shuffled epoch
    assert res["order"] == res["again"]  # same seed: same order on every rank and restart
    assert res["order"] != res["other_seed"]
    assert res["blended_len"] >= 40
    assert res["tokens_shape"] == (16,)
    assert {"prefix", "original", "rewrite", "has_rewrite", "window", "tokens", "labels",
            "loss_mask", "position_ids"} <= set(res["sample_keys"])
    lm_tail, original = res["lm_tail"]
    assert lm_tail == original  # the LM sample ends with the original suffix
    assert res["gpt_mix_len"] == 10
