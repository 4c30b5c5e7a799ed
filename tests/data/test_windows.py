"""Tests for rlpt_plugin.data.windows: spec validation and seeded prefix/suffix windows."""

from __future__ import annotations

import random

import pytest

from rlpt_plugin.data.windows import (
    Window,
    WindowSpec,
    WindowSpecError,
    WindowStats,
    make_windows,
    split_points,
)


def doc(n: int, offset: int = 1000) -> list[int]:
    """Token ids equal to offset + position, so a slice reveals exactly where it was cut."""
    return list(range(offset, offset + n))


def test_defaults() -> None:
    spec = WindowSpec()
    assert (spec.suffix_length, spec.seq_length, spec.min_prefix_tokens, spec.windows_per_doc,
            spec.seed) == (128, 2048, 16, 1, 0)
    assert spec.max_prefix_tokens == 1921 and spec.min_document_tokens == 144
    with pytest.raises(TypeError):
        WindowSpec(8)  # type: ignore[misc]  # keyword-only


def test_validation_collects_every_error() -> None:
    with pytest.raises(WindowSpecError) as err:
        WindowSpec(suffix_length=0, seq_length="2048", min_prefix_tokens=-1,  # type: ignore
                   windows_per_doc=True, seed=-3)  # type: ignore[arg-type]
    assert err.value.errors == [
        "`suffix_length` must be >= 1, but is 0 instead.",
        "`seq_length` must be an integer, but is '2048' instead.",
        "`min_prefix_tokens` must be >= 1, but is -1 instead.",
        "`windows_per_doc` must be an integer, but is True instead.",
        "`seed` must be >= 0, but is -3 instead.",
    ]
    assert isinstance(err.value, ValueError)


def test_validation_window_must_fit_sample() -> None:
    WindowSpec(suffix_length=60, seq_length=63, min_prefix_tokens=4)  # 64 tokens: fits exactly
    with pytest.raises(WindowSpecError, match=r"`seq_length` \+ 1 = 64.*but is 5 \+ 60 = 65"):
        WindowSpec(suffix_length=60, seq_length=63, min_prefix_tokens=5)


def test_window_fields_and_exact_slices() -> None:
    spec = WindowSpec(suffix_length=4, seq_length=64, min_prefix_tokens=3, seed=5)
    tokens = doc(20)
    [window] = make_windows(7, tokens, spec)
    s = window.split
    assert (window.doc_index, window.window_index, window.window_id) == (7, 0, "7:0")
    assert 3 <= s <= 16
    assert window.prefix_ids == tuple(range(1000, 1000 + s))
    assert window.suffix_ids == tuple(range(1000 + s, 1000 + s + 4))


def test_split_range_covers_both_ends() -> None:
    spec = WindowSpec(suffix_length=3, seq_length=32, min_prefix_tokens=2)
    splits = {make_windows(d, doc(10), spec)[0].split for d in range(400)}
    assert splits == set(range(2, 8))  # [min_prefix, len - suffix] = [2, 7], all reachable


def test_smallest_document_has_one_split() -> None:
    spec = WindowSpec(suffix_length=5, seq_length=32, min_prefix_tokens=3, windows_per_doc=4)
    [window] = make_windows(0, doc(8), spec)
    assert window.split == 3 and window.suffix_ids == (1003, 1004, 1005, 1006, 1007)


def test_too_short_documents_yield_nothing() -> None:
    spec = WindowSpec(suffix_length=5, seq_length=32, min_prefix_tokens=3)
    assert make_windows(0, doc(7), spec) == []
    assert make_windows(0, [], spec) == []
    stats = WindowStats()
    for i, n in enumerate([7, 8, 2, 30]):
        stats.record(make_windows(i, doc(n), spec))
    assert stats.as_dict() == {"documents": 4, "windows": 2, "skipped_too_short": 2}


def test_prefix_truncated_from_the_left() -> None:
    spec = WindowSpec(suffix_length=8, seq_length=23, min_prefix_tokens=4, windows_per_doc=30)
    tokens = doc(200)
    windows = make_windows(3, tokens, spec)
    assert len(windows) == 30
    assert any(w.split > 16 for w in windows)  # some windows really need truncation
    for w in windows:
        assert len(w.suffix_ids) == 8
        assert len(w.prefix_ids) == min(w.split, 16)  # seq_length + 1 - suffix_length = 16
        assert w.prefix_ids == tuple(tokens[max(0, w.split - 16):w.split])  # nearest kept
        assert len(w.prefix_ids) + len(w.suffix_ids) <= spec.seq_length + 1


def test_windows_per_doc_distinct_splits() -> None:
    spec = WindowSpec(suffix_length=2, seq_length=64, min_prefix_tokens=2, windows_per_doc=6)
    windows = make_windows(11, doc(50), spec)
    assert [w.window_index for w in windows] == list(range(6))
    assert len({w.split for w in windows}) == 6
    assert [w.window_id for w in windows] == [f"11:{i}" for i in range(6)]
    # Only 4 candidate splits (2..5) in a 7-token document: one window each, all distinct.
    short = make_windows(11, doc(7), spec)
    assert sorted(w.split for w in short) == [2, 3, 4, 5]
    # Asking for more windows keeps the first ones (window w depends on draws 0..w only).
    more = make_windows(11, doc(50), WindowSpec(suffix_length=2, seq_length=64,
                                                min_prefix_tokens=2, windows_per_doc=9))
    assert more[:6] == windows


def test_deterministic_and_order_independent() -> None:
    spec = WindowSpec(suffix_length=4, seq_length=40, min_prefix_tokens=2, windows_per_doc=3,
                      seed=17)
    rng = random.Random(0)
    docs = {i: [rng.randrange(50_000) for _ in range(rng.randrange(5, 120))] for i in range(60)}
    forward = {i: make_windows(i, docs[i], spec) for i in docs}
    order = list(docs)
    random.Random(1).shuffle(order)
    shuffled = {i: make_windows(i, docs[i], spec) for i in order}
    assert forward == shuffled
    assert forward == {i: make_windows(i, tuple(docs[i]), spec) for i in docs}  # any sequence
    # Sharding visits a subset: each document's windows are the same as in the full pass.
    assert all(make_windows(i, docs[i], spec) == forward[i] for i in range(1, 60, 4))


def test_seed_and_doc_index_change_splits() -> None:
    base = WindowSpec(suffix_length=4, seq_length=512, min_prefix_tokens=2, windows_per_doc=3)
    tokens = doc(400)
    splits = split_points(0, len(tokens), base)
    assert splits == [w.split for w in make_windows(0, tokens, base)]
    assert split_points(0, len(tokens), WindowSpec(**{**base.__dict__, "seed": 1})) != splits
    assert split_points(1, len(tokens), base) != splits
    # Same seed and index give the same splits regardless of the token *values*.
    assert [w.split for w in make_windows(0, doc(400, offset=7), base)] == splits


def test_draws_are_roughly_uniform() -> None:
    spec = WindowSpec(suffix_length=1, seq_length=32, min_prefix_tokens=1)
    counts = [0] * 10
    for d in range(5000):
        counts[split_points(d, 11, spec)[0] - 1] += 1
    assert min(counts) > 400 and max(counts) < 600  # expected 500 each


def test_bad_doc_index() -> None:
    with pytest.raises(ValueError, match="`doc_index` must be an integer >= 0"):
        make_windows(-1, doc(50), WindowSpec(suffix_length=2, seq_length=8, min_prefix_tokens=1))


def test_window_stats_merge() -> None:
    a, b = WindowStats(documents=2, windows=3), WindowStats(documents=1, skipped_too_short=1)
    a.merge(b)
    assert a.as_dict() == {"documents": 3, "windows": 3, "skipped_too_short": 1}
    assert Window(1, 2, 3, (), ()).window_id == "1:2"
