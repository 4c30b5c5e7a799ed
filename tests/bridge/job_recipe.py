"""An existing, plain Bridge pretraining job: the tiny GPT on Megatron GPT data (.bin/.idx).

Its recipe returns Bridge's own ``ConfigContainer`` with a ``GPTDatasetConfig``, as a team's
recipe would; ``rlpt train`` / ``with_rlpt`` turn it into a self-improving job. The corpus is
written next to the run (deterministic): documents that count upward (token t then t + 1 within
[1, EOD)), each ending with the tokenizer's EOD; the job sets ``eod_mask_loss`` (no loss on predicting
across a document boundary).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rlpt_plugin.recipes.tiny import VOCAB, tiny_config

EOD = VOCAB - 2  # Bridge's NullTokenizer(vocab_size=VOCAB - 1): EOD is its last id
JOB_FIELDS = ("model", "train", "optimizer", "scheduler", "logger", "tokenizer", "checkpoint", "dist", "rng")


def job_documents(count: int = 64, seed: int = 7) -> list[list[int]]:
    rng = np.random.RandomState(seed)
    docs = []
    for _ in range(count):
        start, length = int(rng.randint(1, EOD)), int(rng.randint(10, 40))
        docs.append([(start - 1 + i) % (EOD - 1) + 1 for i in range(length)] + [EOD])
    return docs


def write_corpus(prefix: Path) -> Path:
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder

    if Path(f"{prefix}.idx").exists():
        return prefix
    # Every rank of a job runs the recipe: each writes its own copy under a private name and
    # moves it into place (.bin first, .idx last, both atomic), so no rank ever sees another's
    # half-written file (two ranks sharing one temp name once raced; the copies are identical).
    private = prefix.parent / f".{prefix.name}.{os.getpid()}"
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = IndexedDatasetBuilder(f"{private}.bin", dtype=np.int32)
    for doc in job_documents():
        builder.add_document(np.array(doc, dtype=np.int64), [len(doc)])
    builder.finalize(f"{private}.idx")
    os.replace(f"{private}.bin", f"{prefix}.bin")
    os.replace(f"{private}.idx", f"{prefix}.idx")
    return prefix


def gpt_data(prefix: Path, seq_length: int):
    from megatron.bridge.training.config import GPTDatasetConfig

    return GPTDatasetConfig(random_seed=11, sequence_length=seq_length, blend=([str(prefix)], None),
                            split="100,0,0", reset_position_ids=False, reset_attention_mask=False,
                            eod_mask_loss=True, path_to_cache=str(prefix.parent / "cache"),
                            dataloader_type="single", num_workers=0)


def plain_job(out_dir: str | Path):
    """A plain Bridge ConfigContainer (no rlpt section) training on its own GPT data."""
    from megatron.bridge.training.config import ConfigContainer

    out_dir = Path(out_dir)
    tiny = tiny_config(out_dir)
    prefix = write_corpus(out_dir / "job_corpus" / "text_document")
    return ConfigContainer(**{k: getattr(tiny, k) for k in JOB_FIELDS},
                           dataset=gpt_data(prefix, tiny.model.seq_length))
