"""The job's own pretraining data as LM-only rows (``rlpt.data.job_sequences_per_step``).

:func:`with_rlpt` keeps the dataset config the job had (a Bridge ``GPTDatasetConfig`` or any
dataset config Bridge can build) as ``dataset.job_data``. Here it is built exactly as Bridge
would build it (Bridge's own provider for that config type, hence megatron-core's
``BlendedMegatronDatasetBuilder`` with the job's blend, split, seed and cache), and sample ``i``
of its training split becomes one LM-only row: the sample's tokens and labels with its loss
mask. Sample ``i`` is a pure function of ``i``, so the rows of a step are the same on every
layout and after a resume.
"""

from __future__ import annotations

import inspect
from functools import partial
from typing import Any, Callable

from rlpt_plugin.rl.packing import Row


def build_job_dataset(job_data: Any, tokenizer: Any, num_samples: int) -> Any:
    """The training split of the job's dataset with at least ``num_samples`` samples.
    Collective when torch.distributed is up (megatron-core builds the index on rank 0 first)."""
    from megatron.bridge.data.utils import get_dataset_provider

    job_data.tokenizer = tokenizer  # what Bridge's setup does for the job's own dataset
    provider = get_dataset_provider(job_data)
    if "tokenizer" in inspect.signature(provider).parameters:
        provider = partial(provider, tokenizer=tokenizer)
    train, _, _ = provider([num_samples, 0, 0], job_data)
    if train is None or len(train) == 0:
        raise ValueError(f"`dataset.job_data` ({type(job_data).__name__}) has no training samples: "
                         "check its blend and split")
    return train


def sample_row(index: int, sample: dict[str, Any]) -> Row:
    """A Megatron GPT sample (``tokens``, ``labels``, ``loss_mask``) as one LM-only row."""
    tokens, labels = sample["tokens"], sample["labels"]
    text = [int(tokens[0]), *(int(t) for t in labels)]  # labels are tokens shifted by one
    return Row(group_id=index, tokens=tuple(text), candidate_length=len(text) - 1, lm=True,
               lm_mask=tuple(float(m) for m in sample["loss_mask"]))


def job_rows(cfg: Any) -> Callable[[int], Row]:
    """Global sequence index -> LM-only row of the job's own data, for the whole run."""
    per_step = cfg.rlpt.data.job_sequences_per_step
    dataset = build_job_dataset(cfg.dataset.job_data, cfg.dataset.tokenizer, cfg.train.train_iters * per_step)

    def row(index: int) -> Row:
        return sample_row(index, dataset[index % len(dataset)])

    return row
