"""Corpus readers: JSONL (optionally gzipped), Parquet and Megatron indexed datasets.

Every reader yields :class:`Document`\\ s numbered by their position among the *valid* documents
of the whole corpus. The numbering depends only on the files and their order, never on sharding
or processes, so every shard of a sharded job agrees on which document is number ``i``
(:func:`shard_filter` relies on that). Bad records are counted in :class:`ReadStats` with a few
examples for the summary -- they are neither silently dropped nor allowed to crash a long job.
Mistakes that concern a whole file (missing file, missing Parquet column) raise
:class:`CorpusError` as soon as the reader is created, before any document is read.
"""

from __future__ import annotations

import itertools

import gzip
import json
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

#: Extensions read as JSON lines (``.json`` only when named explicitly, see :func:`open_corpus`).
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
#: What a directory expands to (``.json`` is left out: directories often hold config files).
_DIR_JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
MAX_EXAMPLES = 5
_ACCEPTED = ("a .jsonl/.jsonl.gz/.json file, a .parquet file, a Megatron indexed dataset "
             "prefix (with .bin and .idx next to it) or a directory of those")


class CorpusError(ValueError):
    """A user mistake concerning a whole input (missing file, missing column, unreadable file)."""


@dataclass(frozen=True)
class Document:
    """One valid document: exactly one of ``text`` and ``token_ids`` is set.

    ``index`` is the position among the valid documents of the whole corpus; ``source`` says
    where it came from ("file:line" for JSONL, "file:row" for Parquet with 0-based rows,
    "prefix:document" for indexed datasets).
    """

    index: int
    source: str
    text: str | None = None
    token_ids: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if (self.text is None) == (self.token_ids is None):
            raise ValueError(f"Document {self.source}: exactly one of `text` and `token_ids` "
                             "must be set.")


@dataclass
class ReadStats:
    """Counters of documents read and records skipped, with the first few examples per reason."""

    documents: int = 0
    skipped_broken_json: int = 0
    skipped_non_utf8: int = 0
    skipped_empty: int = 0
    skipped_missing_field: int = 0
    skipped_not_text: int = 0
    #: counter name -> up to MAX_EXAMPLES "file:line: reason" strings.
    examples: dict[str, list[str]] = field(default_factory=dict)

    def skip(self, counter: str, source: str, reason: str) -> None:
        """Count one skipped record under ``counter`` (e.g. "skipped_empty")."""
        setattr(self, counter, getattr(self, counter) + 1)
        kept = self.examples.setdefault(counter, [])
        if len(kept) < MAX_EXAMPLES:
            kept.append(f"{source}: {reason}")

    @property
    def total_skipped(self) -> int:
        return sum(v for k, v in self.as_dict().items() if k.startswith("skipped_"))

    def as_dict(self) -> dict[str, int]:
        """The counters only (JSON-friendly; the examples are in ``examples``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "examples"}

    def merge(self, other: ReadStats) -> None:
        """Add another reader's counts (e.g. of another shard) to these."""
        for name, value in other.as_dict().items():
            setattr(self, name, getattr(self, name) + value)
        for name, items in other.examples.items():
            kept = self.examples.setdefault(name, [])
            kept.extend(items[: max(0, MAX_EXAMPLES - len(kept))])

    def summary(self) -> str:
        """A human-readable report: counts, then the recorded examples."""
        lines = [f"{self.documents} documents read, {self.total_skipped} records skipped"]
        for name, value in self.as_dict().items():
            if name.startswith("skipped_") and value:
                lines.append(f"  {name}: {value}")
                lines.extend(f"    e.g. {example}" for example in self.examples.get(name, []))
        return "\n".join(lines)


# --- path resolution ---------------------------------------------------------------------------

def _is_jsonl(path: Path, suffixes: tuple[str, ...] = JSONL_SUFFIXES) -> bool:
    return path.name.endswith(suffixes)


def _idx_prefix(path: Path) -> Path | None:
    """The indexed-dataset prefix ``path`` names (``x``, ``x.idx`` or ``x.bin``), if any."""
    if path.suffix in (".idx", ".bin") and path.is_file():
        return path.with_suffix("")
    if Path(f"{path}.idx").is_file() or Path(f"{path}.bin").is_file():
        return path
    return None


def _expand_dir(directory: Path, kinds: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Supported entries of ``directory`` (not recursive), sorted by name."""
    found: list[tuple[str, str, Path]] = []
    for entry in directory.iterdir():
        if not entry.is_file():
            continue
        if "jsonl" in kinds and _is_jsonl(entry, _DIR_JSONL_SUFFIXES):
            found.append((entry.name, "jsonl", entry))
        elif "parquet" in kinds and entry.suffix == ".parquet":
            found.append((entry.name, "parquet", entry))
        elif "indexed" in kinds and entry.suffix == ".idx":
            found.append((entry.stem, "indexed", entry.with_suffix("")))
    if not found:
        raise CorpusError(f"{directory}: directory contains no readable corpus files "
                          f"(looked for: {', '.join(kinds)}).")
    return [(kind, path) for _, kind, path in sorted(found, key=lambda item: item[0])]


def _resolve(spec: str | Path | Sequence[str | Path],
             kinds: tuple[str, ...]) -> list[tuple[str, Path]]:
    """Turn a spec into an ordered list of (kind, path); raises CorpusError for bad paths."""
    if isinstance(spec, (str, Path)):
        text = str(spec)
        # A comma-separated string lists several inputs (CLI convenience) unless it is a path.
        several = "," in text and not Path(text).exists()
        items = [s for s in text.split(",") if s] if several else [text]
    else:
        items = [str(s) for s in spec]
    if not items:
        raise CorpusError("empty corpus spec: expected at least one path.")
    out: list[tuple[str, Path]] = []
    for item in items:
        path = Path(item).expanduser()
        if path.is_dir():
            out.extend(_expand_dir(path, kinds))
        elif path.is_file() and "jsonl" in kinds and _is_jsonl(path):
            out.append(("jsonl", path))
        elif path.is_file() and "parquet" in kinds and path.suffix == ".parquet":
            out.append(("parquet", path))
        elif "indexed" in kinds and (prefix := _idx_prefix(path)) is not None:
            out.append(("indexed", prefix))
        elif path.exists():
            raise CorpusError(f"{path}: unsupported corpus file type; expected "
                              f"{_describe(kinds)}.")
        else:
            raise CorpusError(f"{path}: no such file or directory; expected {_describe(kinds)}.")
    return out


def _describe(kinds: tuple[str, ...]) -> str:
    if kinds == ("jsonl",):
        return "a .jsonl/.jsonl.gz/.json file or a directory of .jsonl/.jsonl.gz files"
    if kinds == ("parquet",):
        return "a .parquet file or a directory of .parquet files"
    return _ACCEPTED


# --- per-format record iterators: yield (source, text or token ids) of valid records ----------

def _check_text(value: object, source: str, what: str, stats: ReadStats) -> str | None:
    """``value`` if it is usable text, else count the skip and return None."""
    if value is None:
        stats.skip("skipped_empty", source, f"{what} is null")
        return None
    if not isinstance(value, str):
        stats.skip("skipped_not_text", source, f"{what} is a {type(value).__name__}, not a string")
        return None
    if not value.strip():
        stats.skip("skipped_empty", source, f"{what} is empty or whitespace only")
        return None
    try:
        # JSON escapes can smuggle in lone surrogates, which no tokenizer can encode.
        value.encode("utf-8")
    except UnicodeEncodeError:
        stats.skip("skipped_non_utf8", source, f"{what} contains unpaired surrogates")
        return None
    return value


def _jsonl_records(path: Path, key: str, stats: ReadStats) -> Iterator[tuple[str, str]]:
    opener = gzip.open if path.name.endswith(".gz") else open
    line_no = 0
    try:
        with opener(path, "rb") as handle:
            for line_no, raw in enumerate(handle, start=1):
                source = f"{path}:{line_no}"
                if not raw.strip():
                    continue  # blank lines separate nothing and are not records
                try:
                    # utf-8-sig on the first line tolerates a byte-order mark written by editors.
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as err:
                    stats.skip("skipped_non_utf8", source, f"invalid UTF-8 at byte {err.start}")
                    continue
                try:
                    record = json.loads(line)
                except (ValueError, RecursionError) as err:
                    # ValueError covers JSONDecodeError and over-long integers; RecursionError
                    # absurdly deep nesting. Either way the line is not a usable record.
                    reason = err.msg if isinstance(err, json.JSONDecodeError) else str(err)[:80]
                    stats.skip("skipped_broken_json", source, f"broken JSON ({reason})")
                    continue
                if not isinstance(record, dict):
                    stats.skip("skipped_broken_json", source,
                               f"JSON {type(record).__name__} instead of an object")
                    continue
                if key not in record:
                    stats.skip("skipped_missing_field", source, f"no field {key!r}")
                    continue
                text = _check_text(record[key], source, f"field {key!r}", stats)
                if text is not None:
                    yield source, text
    except (OSError, EOFError, zlib.error) as err:
        # A truncated or corrupt gzip stream cannot be resynchronised: the file is unreadable.
        raise CorpusError(f"{path}:{line_no + 1}: cannot read file ({err}).") from err


def _parquet_file(path: Path, column: str):  # -> pyarrow.parquet.ParquetFile
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as err:
        raise CorpusError(f"{path}: not a readable Parquet file ({err}).") from err
    schema = parquet.schema_arrow
    if column not in schema.names:
        raise CorpusError(f"{path}: column {column!r} not found; the file has columns "
                          f"{schema.names}.")
    kind = schema.field(column).type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    is_view = getattr(pa.types, "is_string_view", lambda _t: False)
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or is_view(kind)
            or pa.types.is_null(kind)):
        raise CorpusError(f"{path}: column {column!r} must hold strings, but has type "
                          f"{schema.field(column).type} instead.")
    return parquet


def _parquet_records(path: Path, column: str, stats: ReadStats) -> Iterator[tuple[str, str]]:
    parquet = _parquet_file(path, column)
    row = 0
    # Batches stay within row groups, so memory is bounded by the batch, not the file.
    for batch in parquet.iter_batches(batch_size=1024, columns=[column]):
        for value in batch.column(0).to_pylist():
            source = f"{path}:{row}"
            row += 1
            text = _check_text(value, source, f"column {column!r}", stats)
            if text is not None:
                yield source, text


def _check_indexed(prefix: Path) -> None:
    missing = [p.name for p in (Path(f"{prefix}.bin"), Path(f"{prefix}.idx")) if not p.is_file()]
    if missing:
        raise CorpusError(f"{prefix}: indexed dataset is missing {' and '.join(missing)}.")


def _indexed_records(prefix: Path, stats: ReadStats) -> Iterator[tuple[str, tuple[int, ...]]]:
    from rlpt_plugin.megatron.data.indexed_corpus import indexed_documents  # heavy: import lazily

    try:
        documents = indexed_documents(prefix)
        first = next(documents, None)
    except Exception as err:  # any failure here means the pair of files is not a valid dataset
        raise CorpusError(f"{prefix}: cannot open Megatron indexed dataset ({err!r}).") from err
    if first is None:
        return
    for doc, tokens in enumerate(itertools.chain([first], documents)):
        source = f"{prefix}:{doc}"
        if not tokens:
            stats.skip("skipped_empty", source, "document has no tokens")
            continue
        yield source, tuple(tokens)


# --- public readers ----------------------------------------------------------------------------

def _numbered(records: Iterable[tuple[str, str | tuple[int, ...]]], stats: ReadStats,
              start_index: int) -> Iterator[Document]:
    index = start_index
    for source, payload in records:
        stats.documents += 1
        if isinstance(payload, str):
            yield Document(index=index, source=source, text=payload)
        else:
            yield Document(index=index, source=source, token_ids=payload)
        index += 1


def _records(kind: str, path: Path, key: str, stats: ReadStats) -> Iterator[tuple[str, object]]:
    if kind == "jsonl":
        return _jsonl_records(path, key, stats)
    if kind == "parquet":
        return _parquet_records(path, key, stats)
    return _indexed_records(path, stats)


def _validate_eagerly(entries: list[tuple[str, Path]], key: str) -> None:
    """Whole-file mistakes surface before the first document, not hours into a job."""
    for kind, path in entries:
        if kind == "parquet":
            _parquet_file(path, key)
        elif kind == "indexed":
            _check_indexed(path)


def _chain(entries: list[tuple[str, Path]], key: str, stats: ReadStats,
           start_index: int) -> Iterator[Document]:
    records = (rec for kind, path in entries for rec in _records(kind, path, key, stats))
    return _numbered(records, stats, start_index)


def read_jsonl(paths: str | Path | Sequence[str | Path], *, field: str = "text",
               stats: ReadStats | None = None, start_index: int = 0) -> Iterator[Document]:
    """Documents from JSON-lines files (``.gz`` allowed), in the given order.

    A directory expands to its ``*.jsonl``/``*.jsonl.gz`` files sorted by name. Lines are read
    as bytes and decoded strictly; bad lines are counted in ``stats`` and reading continues.
    """
    entries = _resolve(paths, ("jsonl",))
    return _chain(entries, field, stats if stats is not None else ReadStats(), start_index)


def read_parquet(paths: str | Path | Sequence[str | Path], *, column: str = "text",
                 stats: ReadStats | None = None, start_index: int = 0) -> Iterator[Document]:
    """Documents from the string ``column`` of Parquet files, streamed batch by batch.

    A file without ``column`` (or with a non-string one) raises :class:`CorpusError` at once;
    null and empty values are counted skips.
    """
    entries = _resolve(paths, ("parquet",))
    _validate_eagerly(entries, column)
    return _chain(entries, column, stats if stats is not None else ReadStats(), start_index)


def read_indexed(path_prefix: str | Path, *, stats: ReadStats | None = None,
                 start_index: int = 0) -> Iterator[Document]:
    """Token-id documents of a Megatron indexed dataset (``prefix.bin`` + ``prefix.idx``)."""
    prefix = Path(path_prefix).expanduser()
    prefix = _idx_prefix(prefix) or prefix
    _check_indexed(prefix)
    return _chain([("indexed", prefix)], "", stats if stats is not None else ReadStats(),
                  start_index)


def open_corpus(spec: str | Path | Sequence[str | Path], *, field: str = "text",
                stats: ReadStats | None = None) -> Iterator[Document]:
    """Documents of every input in ``spec``, numbered across all of them in order.

    Inputs may mix kinds: JSONL (``.jsonl``, ``.jsonl.gz``, ``.json``), Parquet (``field`` is the
    column), indexed-dataset prefixes and directories (their JSONL, Parquet and ``.idx`` entries,
    sorted by name). A string containing commas lists several inputs. Bad paths raise
    :class:`CorpusError` immediately.
    """
    entries = _resolve(spec, ("jsonl", "parquet", "indexed"))
    _validate_eagerly(entries, field)
    return _chain(entries, field, stats if stats is not None else ReadStats(), 0)


def shard_filter(docs: Iterable[Document], shard: int, num_shards: int) -> Iterator[Document]:
    """The documents with ``index % num_shards == shard`` (shards are disjoint and complete)."""
    if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(f"`num_shards` must be an integer >= 1, but is {num_shards!r} instead.")
    if isinstance(shard, bool) or not isinstance(shard, int) or not 0 <= shard < num_shards:
        raise ValueError(f"`shard` must be an integer in [0, {num_shards}), but is {shard!r} "
                         "instead.")
    return (doc for doc in docs if doc.index % num_shards == shard)
