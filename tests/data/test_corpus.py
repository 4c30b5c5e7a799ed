"""Tests for rlpt_plugin.data.corpus: JSONL / Parquet / indexed readers, open_corpus, sharding."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from rlpt_plugin.data.corpus import (
    CorpusError,
    Document,
    ReadStats,
    open_corpus,
    read_indexed,
    read_jsonl,
    read_parquet,
    shard_filter,
)


def write_lines(path: Path, lines: list[bytes | str | dict]) -> Path:
    """Write raw lines: dicts as JSON, str as UTF-8, bytes verbatim."""
    out = []
    for line in lines:
        if isinstance(line, dict):
            line = json.dumps(line)
        out.append(line.encode("utf-8") if isinstance(line, str) else line)
    data = b"\n".join(out) + b"\n"
    if path.name.endswith(".gz"):
        with gzip.open(path, "wb") as handle:
            handle.write(data)
    else:
        path.write_bytes(data)
    return path


# --- JSONL -------------------------------------------------------------------------------------

def test_jsonl_good_file(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", [{"text": "alpha"}, {"text": "beta", "id": 7}])
    stats = ReadStats()
    docs = list(read_jsonl(path, stats=stats))
    assert docs == [Document(0, f"{path}:1", text="alpha"), Document(1, f"{path}:2", text="beta")]
    assert stats.documents == 2 and stats.total_skipped == 0


def test_jsonl_every_bad_record_is_a_counted_skip(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", [
        {"text": "one"},                       # 1 ok
        '{"text": "unterminated',              # 2 broken JSON
        b'{"text": "caf\xe9"}',                # 3 latin-1 byte: not UTF-8
        {"text": ""},                          # 4 empty
        {"text": "  \n\t "},                   # 5 whitespace only
        {"body": "no text field"},             # 6 missing field
        {"text": 42},                          # 7 not a string
        '["a", "list"]',                       # 8 JSON but not an object
        {"text": None},                        # 9 null
        '{"text": "\\ud800 lone surrogate"}',  # 10 cannot be UTF-8 encoded
        {"text": "two"},                       # 11 ok, and reading went on after all of that
    ])
    stats = ReadStats()
    docs = list(read_jsonl(path, stats=stats))
    assert [(d.index, d.source, d.text) for d in docs] == [
        (0, f"{path}:1", "one"), (1, f"{path}:11", "two")]
    assert stats.as_dict() == {
        "documents": 2, "skipped_broken_json": 2, "skipped_non_utf8": 2, "skipped_empty": 3,
        "skipped_missing_field": 1, "skipped_not_text": 1}
    assert stats.total_skipped == 9
    assert stats.examples["skipped_broken_json"][0].startswith(f"{path}:2: broken JSON")
    assert stats.examples["skipped_non_utf8"][0].startswith(f"{path}:3: invalid UTF-8")
    assert stats.examples["skipped_missing_field"] == [f"{path}:6: no field 'text'"]
    assert stats.examples["skipped_not_text"][0].startswith(f"{path}:7: ")
    assert f"{path}:4" in stats.summary()


def test_jsonl_examples_are_capped_at_five(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "e.jsonl", [{"text": ""}] * 8)
    stats = ReadStats()
    assert list(read_jsonl(path, stats=stats)) == []
    assert stats.skipped_empty == 8
    assert [e.split(": ")[0] for e in stats.examples["skipped_empty"]] == [
        f"{path}:{i}" for i in range(1, 6)]


def test_jsonl_custom_field_and_blank_lines(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", [
        "", {"content": "x"}, "   ", "", {"text": "wrong field"}, {"content": "y"}, ""])
    stats = ReadStats()
    docs = list(read_jsonl(path, field="content", stats=stats))
    assert [(d.source, d.text) for d in docs] == [(f"{path}:2", "x"), (f"{path}:6", "y")]
    # Blank lines are neither documents nor skips; the record without "content" is a skip.
    assert stats.documents == 2 and stats.total_skipped == 1 and stats.skipped_missing_field == 1


def test_jsonl_gzip_and_bom(tmp_path: Path) -> None:
    gz = write_lines(tmp_path / "g.jsonl.gz", [{"text": "zipped"}, {"text": "too"}])
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b'\xef\xbb\xbf{"text": "after bom"}\n')
    assert [d.text for d in read_jsonl([gz, bom])] == ["zipped", "too", "after bom"]


def test_jsonl_indices_contiguous_across_files(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "a.jsonl", [{"text": "a0"}, {"text": ""}, {"text": "a1"}])
    b = write_lines(tmp_path / "b.jsonl", ["{oops", {"text": "b0"}])
    docs = list(read_jsonl([b, a]))  # the given order, not the name order
    assert [(d.index, d.text) for d in docs] == [(0, "b0"), (1, "a0"), (2, "a1")]


def test_jsonl_directory_expands_sorted_by_name(tmp_path: Path) -> None:
    write_lines(tmp_path / "b.jsonl", [{"text": "b"}])
    write_lines(tmp_path / "a.jsonl.gz", [{"text": "a"}])
    write_lines(tmp_path / "c.jsonl", [{"text": "c"}])
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "config.json").write_text('{"text": "not a corpus file"}')
    assert [d.text for d in read_jsonl(tmp_path)] == ["a", "b", "c"]


def test_jsonl_errors_for_whole_files(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="no such file"):
        read_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(CorpusError, match="contains no readable corpus files"):
        read_jsonl(tmp_path)
    broken = tmp_path / "broken.jsonl.gz"
    broken.write_bytes(gzip.compress(b'{"text": "x"}\n' * 50)[:-12])  # truncated stream
    with pytest.raises(CorpusError, match="broken.jsonl.gz"):
        list(read_jsonl(broken))


# --- Parquet -----------------------------------------------------------------------------------

def write_parquet(path: Path, columns: dict[str, list], row_group_size: int = 2) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_parquet_good_file_several_row_groups(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    texts = [f"doc {i}" for i in range(7)]
    path = write_parquet(tmp_path / "p.parquet", {"text": texts, "n": list(range(7))})
    assert pq.ParquetFile(path).num_row_groups == 4
    stats = ReadStats()
    docs = list(read_parquet(path, stats=stats))
    assert [(d.index, d.source, d.text) for d in docs] == [
        (i, f"{path}:{i}", f"doc {i}") for i in range(7)]
    assert stats.documents == 7 and stats.total_skipped == 0


def test_parquet_nulls_and_empties_are_counted(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "n.parquet", {"body": ["a", None, "", " ", "b"]})
    stats = ReadStats()
    docs = list(read_parquet(path, column="body", stats=stats))
    assert [(d.index, d.source, d.text) for d in docs] == [(0, f"{path}:0", "a"),
                                                          (1, f"{path}:4", "b")]
    assert stats.skipped_empty == 3 and stats.total_skipped == 3
    assert stats.examples["skipped_empty"][0] == f"{path}:1: column 'body' is null"


def test_parquet_missing_or_non_string_column(tmp_path: Path) -> None:
    path = write_parquet(tmp_path / "m.parquet", {"content": ["a"], "n": [1]})
    with pytest.raises(CorpusError) as err:
        read_parquet(path)  # raised eagerly, before iteration
    message = str(err.value)
    assert str(path) in message and "'text'" in message and "['content', 'n']" in message
    with pytest.raises(CorpusError, match="must hold strings"):
        read_parquet(path, column="n")
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"not parquet at all")
    with pytest.raises(CorpusError, match="not a readable Parquet file"):
        read_parquet(garbage)


# --- Megatron indexed dataset ------------------------------------------------------------------

def build_indexed(prefix: Path, documents: list[list[list[int]]]) -> Path:
    """Each document is a list of sequences (several sequences = a sentence-split document)."""
    import numpy as np
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    builder = IndexedDatasetBuilder(f"{prefix}.bin", dtype=np.int32)
    for sequences in documents:
        flat = [t for seq in sequences for t in seq]
        builder.add_document(np.array(flat, dtype=np.int64), [len(s) for s in sequences])
    builder.finalize(f"{prefix}.idx")
    return prefix


def test_indexed_reads_exact_token_ids(tmp_path: Path) -> None:
    prefix = build_indexed(tmp_path / "corpus_text_document",
                           [[[5, 6, 7]], [[1, 2], [3, 4, 9]], [[]], [[70000, 0]]])
    stats = ReadStats()
    docs = list(read_indexed(prefix, stats=stats))
    assert [(d.index, d.source, d.token_ids, d.text) for d in docs] == [
        (0, f"{prefix}:0", (5, 6, 7), None),
        (1, f"{prefix}:1", (1, 2, 3, 4, 9), None),
        (2, f"{prefix}:3", (70000, 0), None)]
    assert all(type(t) is int for d in docs for t in d.token_ids)
    assert stats.documents == 3 and stats.skipped_empty == 1
    # Naming the .idx file itself works too.
    assert [d.token_ids for d in read_indexed(f"{prefix}.idx")][0] == (5, 6, 7)


def test_indexed_missing_idx(tmp_path: Path) -> None:
    prefix = build_indexed(tmp_path / "ds", [[[1, 2, 3]]])
    Path(f"{prefix}.idx").unlink()
    with pytest.raises(CorpusError, match=r"missing ds\.idx"):
        read_indexed(prefix)
    with pytest.raises(CorpusError, match=r"missing ds\.bin and ds\.idx"):
        read_indexed(tmp_path / "nothing" / "ds")


# --- open_corpus and sharding ------------------------------------------------------------------

def test_open_corpus_mixed_spec(tmp_path: Path) -> None:
    j = write_lines(tmp_path / "a.jsonl", [{"text": "j0"}, {"text": ""}, {"text": "j1"}])
    p = write_parquet(tmp_path / "b.parquet", {"text": ["p0", None, "p1"]})
    prefix = build_indexed(tmp_path / "c_text_document", [[[11, 12]], [[13]]])
    stats = ReadStats()
    docs = list(open_corpus([str(p), str(prefix), str(j)], stats=stats))
    assert [(d.index, d.text, d.token_ids) for d in docs] == [
        (0, "p0", None), (1, "p1", None), (2, None, (11, 12)), (3, None, (13,)),
        (4, "j0", None), (5, "j1", None)]
    assert stats.documents == 6 and stats.skipped_empty == 2
    # A directory holds all three kinds, sorted by name; a comma string lists inputs.
    assert [d.index for d in open_corpus(tmp_path)] == list(range(6))
    assert [d.text or d.token_ids for d in open_corpus(tmp_path)][:3] == ["j0", "j1", "p0"]
    assert [d.text for d in open_corpus(f"{j},{j}")] == ["j0", "j1", "j0", "j1"]


def test_open_corpus_json_extension_and_errors(tmp_path: Path) -> None:
    js = write_lines(tmp_path / "x.json", [{"text": "json ext"}])
    assert [d.text for d in open_corpus(str(js))] == ["json ext"]
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(CorpusError, match="no such file") as err:
        open_corpus([str(js), str(missing)])
    assert str(missing) in str(err.value)
    (tmp_path / "readme.md").write_text("hi")
    with pytest.raises(CorpusError, match="unsupported corpus file type"):
        open_corpus(str(tmp_path / "readme.md"))
    with pytest.raises(CorpusError, match="empty corpus spec"):
        open_corpus([])
    # Whole-file mistakes surface when the corpus is opened, before any document is read.
    bad = write_parquet(tmp_path / "bad.parquet", {"content": ["a"]})
    with pytest.raises(CorpusError, match="column 'text' not found"):
        open_corpus([str(js), str(bad)])
    prefix = build_indexed(tmp_path / "y", [[[1]]])
    Path(f"{prefix}.bin").unlink()
    with pytest.raises(CorpusError, match=r"missing y\.bin"):
        open_corpus([str(js), f"{prefix}.idx"])


def test_shard_filter_disjoint_and_complete(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl",
                       [{"text": f"d{i}"} if i % 4 else {"text": ""} for i in range(23)])
    everything = [d.index for d in read_jsonl(path)]
    assert everything == list(range(17))
    shards = [[d.index for d in shard_filter(read_jsonl(path), k, 3)] for k in range(3)]
    assert shards[1] == [1, 4, 7, 10, 13, 16]
    assert sorted(i for s in shards for i in s) == everything
    assert all(set(a).isdisjoint(b) for n, a in enumerate(shards) for b in shards[n + 1:])


@pytest.mark.parametrize("shard, num", [(3, 3), (-1, 2), (0, 0), (True, 2), (0, 1.5)])
def test_shard_filter_validation(shard: object, num: object) -> None:
    with pytest.raises(ValueError, match="must be an integer"):
        shard_filter([], shard, num)  # type: ignore[arg-type]


def test_document_needs_exactly_one_payload() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        Document(0, "x:1")
    with pytest.raises(ValueError, match="exactly one"):
        Document(0, "x:1", text="a", token_ids=(1,))


def test_stats_merge() -> None:
    a, b = ReadStats(documents=2), ReadStats(documents=1)
    a.skip("skipped_empty", "f:1", "empty")
    b.skip("skipped_empty", "g:3", "empty")
    a.merge(b)
    assert a.documents == 3 and a.skipped_empty == 2
    assert a.examples["skipped_empty"] == ["f:1: empty", "g:3: empty"]
