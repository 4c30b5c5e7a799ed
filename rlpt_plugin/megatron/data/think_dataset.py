"""Thinking SFT: think stores (``rlpt rewrite --task think``) as LM-only rows of the step.

:class:`ThinkDataset` is a megatron-core ``MegatronDataset`` over :class:`ThinkStore`, built by
``BlendedMegatronDatasetBuilder`` like any Megatron dataset, so several stores blend
(``rlpt.data.think_stores``, by size) and the sample order is a pure function of the seed: the
same on every rank and after a resume. Sample ``i`` is one augmented chunk, original and
thought tokens alike, as Megatron GPT fields (``tokens``, ``labels``, ``loss_mask``,
``position_ids``; length ``sequence_length``, right-padded, loss 0 on padding) plus
``thought_mask`` (1 where the LABEL is a thought token) and ``window`` ([doc_index,
chunk_index]). A chunk with its thoughts longer than ``sequence_length + 1`` tokens keeps its
first ``sequence_length + 1``.

:func:`think_rows` turns sample ``i`` into one LM-only row with loss on every token, original
and thought (the report's thinking SFT): ``rlpt.data.think_sequences_per_step`` of them per
step, next to the groups' rows and the job's own data (rlpt_plugin/megatron/data/job_data.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from rlpt_plugin.megatron.data.think_store import ThinkStore
from rlpt_plugin.rl.packing import Row


@dataclass
class ThinkDatasetConfig(BlendedMegatronDatasetConfig):
    """``sequence_length`` is the model's; stores must match ``tokenizer_fingerprint`` when set."""

    tokenizer_fingerprint: str | None = None
    pad_id: int = 0


class ThinkDataset(MegatronDataset):
    def __init__(self, dataset: ThinkStore, dataset_path: str | None, indices: np.ndarray,
                 num_samples: int | None, index_split: Split, config: ThinkDatasetConfig) -> None:
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        self.sample_index = self._build_sample_index()

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: ThinkStore) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: ThinkDatasetConfig) -> ThinkStore:
        store = ThinkStore(dataset_path, expect_tokenizer=config.tokenizer_fingerprint)
        if len(store) == 0:
            raise ValueError(f"think store {dataset_path} holds no chunks (every chunk was dropped: see its "
                             "manifest's failures): nothing to train on")
        return store

    @staticmethod
    def _key_config_attributes() -> list[str]:
        return [*MegatronDataset._key_config_attributes(), "tokenizer_fingerprint"]

    def _build_sample_index(self) -> np.ndarray:
        """Shuffled epochs of this split's chunks until ``num_samples`` are covered."""
        if len(self.indices) == 0:
            return np.zeros(0, dtype=np.int64)
        wanted = self.num_samples if self.num_samples is not None else len(self.indices)
        epochs = -(-wanted // len(self.indices))
        rng = np.random.RandomState(self.config.random_seed + 104729 * self.index_split.value)
        order = np.concatenate([rng.permutation(self.indices) for _ in range(epochs)])
        return order[:wanted].astype(np.int64)

    def __len__(self) -> int:
        return len(self.sample_index)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        chunk = self.dataset[int(self.sample_index[idx])]  # the strip check runs on this read
        s = self.config.sequence_length
        text = chunk.tokens[: s + 1].astype(np.int64)
        thought = chunk.mask[: s + 1].astype(np.float32)
        tokens = np.full(s, self.config.pad_id, dtype=np.int64)
        labels = np.full(s, self.config.pad_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        thought_mask = np.zeros(s, dtype=np.float32)
        n = len(text) - 1
        tokens[:n], labels[:n], loss_mask[:n], thought_mask[:n] = text[:-1], text[1:], 1.0, thought[1:]
        return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
                "loss_mask": torch.from_numpy(loss_mask), "thought_mask": torch.from_numpy(thought_mask),
                "position_ids": torch.arange(s, dtype=torch.int64),
                "window": np.asarray([chunk.doc_index, chunk.chunk_index], dtype=np.int64)}


def build_think_datasets(config: ThinkDatasetConfig, sizes: Sequence[int | None]) -> list[Any]:
    """train/valid/test datasets (None where a split is empty), blended over ``config.blend``."""
    return BlendedMegatronDatasetBuilder(ThinkDataset, list(sizes), lambda: True, config).build()


def sample_row(index: int, sample: dict[str, Any]) -> Row:
    """A think sample as one LM-only row: its real tokens, loss on every one of them."""
    n = int(sample["loss_mask"].sum())
    tokens = sample["tokens"][:n].tolist()
    text = [*tokens, int(sample["labels"][n - 1])]
    return Row(group_id=index, tokens=tuple(text), candidate_length=len(text) - 1, lm=True)


def think_rows(cfg: Any) -> Callable[[int], Row]:
    """Global sequence index -> LM-only row of the think stores, for the whole run."""
    data = cfg.rlpt.data
    fingerprint = None
    if data.tokenizer:
        from rlpt_plugin.data.tokenizer import load_tokenizer

        fingerprint = load_tokenizer(data.tokenizer).fingerprint
    samples = cfg.train.train_iters * data.think_sequences_per_step
    dataset = build_think_datasets(ThinkDatasetConfig(
        random_seed=data.seed, sequence_length=cfg.model.seq_length, blend=(list(data.think_stores), None),
        split="100,0,0", tokenizer_fingerprint=fingerprint), [samples, None, None])[0]
    vocab = cfg.model.vocab_size

    def row(index: int) -> Row:
        r = sample_row(index, dataset[index % len(dataset)])
        if vocab is not None and max(r.tokens) >= vocab:
            raise ValueError(f"token id {max(r.tokens)} in think sequence {index} is outside the model's "
                             f"vocabulary of {vocab}: the think stores were written with another tokenizer")
        return r

    return row
