"""A megatron-core ``MegatronDataset`` over rewritten stores.

Built by ``BlendedMegatronDatasetBuilder`` like any Megatron dataset, so several stores blend
(``blend=([store_a, store_b], [w_a, w_b])``) and train/valid/test splits work as usual; with
plain GPT data it blends through megatron-core's ``BlendedDataset`` (:func:`blend_with_gpt`),
because each sample also carries the ordinary LM fields (``tokens``, ``labels``,
``loss_mask``, ``position_ids``) of prefix + original suffix. The sample order is a pure
function of ``random_seed`` (and the split), so it is identical on every rank of a TP/PP group
and across restarts.

Sample fields: ``prefix``, ``original``, ``rewrite`` (int64 arrays; ``rewrite`` is empty when
the teacher gave no usable rewrite, see ``has_rewrite``), ``window`` ([doc_index,
window_index]), and the LM fields above (length ``sequence_length``, right-padded, loss 0 on
padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from megatron.core.datasets.blended_dataset import BlendedDataset
from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
from megatron.core.datasets.blended_megatron_dataset_config import BlendedMegatronDatasetConfig
from megatron.core.datasets.megatron_dataset import MegatronDataset
from megatron.core.datasets.utils import Split

from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore


@dataclass
class SuffixDatasetConfig(BlendedMegatronDatasetConfig):
    """``sequence_length`` is the model's; stores must match ``suffix_length`` and, when set,
    ``tokenizer_fingerprint`` (opening a mismatched store is an error)."""

    suffix_length: int = 128
    tokenizer_fingerprint: str | None = None
    pad_id: int = 0


class SuffixDataset(MegatronDataset):
    def __init__(self, dataset: RewrittenStore, dataset_path: str | None, indices: np.ndarray,
                 num_samples: int | None, index_split: Split, config: SuffixDatasetConfig) -> None:
        super().__init__(dataset, dataset_path, indices, num_samples, index_split, config)
        self.sample_index = self._build_sample_index()

    @staticmethod
    def numel_low_level_dataset(low_level_dataset: RewrittenStore) -> int:
        return len(low_level_dataset)

    @staticmethod
    def build_low_level_dataset(dataset_path: str, config: SuffixDatasetConfig) -> RewrittenStore:
        return RewrittenStore(dataset_path, expect_tokenizer=config.tokenizer_fingerprint,
                              expect_suffix_length=config.suffix_length)

    @staticmethod
    def _key_config_attributes() -> list[str]:
        return [*MegatronDataset._key_config_attributes(), "suffix_length", "tokenizer_fingerprint"]

    def _build_sample_index(self) -> np.ndarray:
        """Shuffled epochs of this split's windows until ``num_samples`` are covered."""
        if len(self.indices) == 0:
            return np.zeros(0, dtype=np.int64)
        wanted = self.num_samples if self.num_samples is not None else len(self.indices)
        epochs = -(-wanted // len(self.indices))
        rng = np.random.RandomState(self.config.random_seed + 7919 * self.index_split.value)
        order = np.concatenate([rng.permutation(self.indices) for _ in range(epochs)])
        return order[:wanted].astype(np.int64)

    def __len__(self) -> int:
        return len(self.sample_index)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        window = self.dataset[int(self.sample_index[idx])]
        prefix = np.asarray(window.prefix, dtype=np.int64)
        original = np.asarray(window.original, dtype=np.int64)
        rewrite = (np.asarray(window.rewrite, dtype=np.int64) if window.rewrite is not None
                   else np.zeros(0, dtype=np.int64))
        sample = {"prefix": prefix, "original": original, "rewrite": rewrite,
                  "has_rewrite": window.rewrite is not None,
                  "window": np.asarray([window.doc_index, window.window_index], dtype=np.int64)}
        sample.update(self._lm_fields(np.concatenate([prefix, original])))
        return sample

    def _lm_fields(self, text: np.ndarray) -> dict[str, torch.Tensor]:
        s = self.config.sequence_length
        text = text[-(s + 1):]  # keep the end: the suffix is what the sample is about
        tokens = np.full(s, self.config.pad_id, dtype=np.int64)
        labels = np.full(s, self.config.pad_id, dtype=np.int64)
        loss_mask = np.zeros(s, dtype=np.float32)
        n = len(text) - 1
        tokens[:n], labels[:n], loss_mask[:n] = text[:-1], text[1:], 1.0
        return {"tokens": torch.from_numpy(tokens), "labels": torch.from_numpy(labels),
                "loss_mask": torch.from_numpy(loss_mask),
                "position_ids": torch.arange(s, dtype=torch.int64)}


def build_suffix_datasets(config: SuffixDatasetConfig, sizes: Sequence[int | None]) -> list[Any]:
    """train/valid/test datasets (None where a split is empty), blended over ``config.blend``."""
    return BlendedMegatronDatasetBuilder(SuffixDataset, list(sizes), lambda: True, config).build()


def blend_with_gpt(datasets: Sequence[MegatronDataset], weights: Sequence[float], size: int,
                   config: BlendedMegatronDatasetConfig) -> BlendedDataset:
    """Blend suffix datasets with plain GPT datasets (e.g. a job's own corpus) by weight."""
    return BlendedDataset(list(datasets), list(weights), size, config)
