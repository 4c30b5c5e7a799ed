"""Documents of an existing Megatron indexed dataset (.bin/.idx), as token-id lists.

Lives here because only this sub-package imports ``megatron.*``; the corpus reader
(rlpt_plugin/data/corpus.py) wraps it with error reporting and skip counting.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from megatron.core.datasets.indexed_dataset import IndexedDataset


def indexed_documents(prefix: Path) -> Iterator[list[int]]:
    """Token ids per document; a document is the concatenation of its sequences (several when
    the dataset was split by sentence). Raises whatever megatron raises for invalid files."""
    dataset = IndexedDataset(str(prefix), mmap=True)
    bounds = [int(b) for b in dataset.document_indices]
    for start, stop in zip(bounds[:-1], bounds[1:]):
        tokens: list[int] = []
        if stop > start:
            for sequence in dataset[start:stop]:
                tokens.extend(sequence.tolist())
        yield tokens
