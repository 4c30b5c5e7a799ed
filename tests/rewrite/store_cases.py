"""Store records for tests, and the spawned body that builds Megatron datasets over stores."""

from __future__ import annotations

from pathlib import Path
from typing import Any

N = 4
STATUSES = ["rewritten", "copied", "refused", "empty", "failed"]


def records(num: int, seed: int = 0) -> list[tuple]:
    out = []
    for i in range(num):
        status = STATUSES[(i + seed) % len(STATUSES)]
        prefix = [10 + (i + j + seed) % 50 for j in range(3 + i % 4)]
        original = [100 + (i + j) % 20 for j in range(N)]
        rewrite = [] if status in ("refused", "empty", "failed") else (
            original if status == "copied" else [200 + (i * j) % 30 for j in range(N - i % 2)])
        out.append((i // 2, i % 2, prefix, original, rewrite, status))
    return out


def manifest(fingerprint: str = "f" * 64) -> dict[str, Any]:
    return {"source": {"corpus": ["test"]}, "suffix_length": N,
            "tokenizer": {"name": "test", "fingerprint": fingerprint, "vocab_size": 300},
            "teacher": {"model_id": "loopback"}}


def dataset_case(rank: int, world_size: int, store_a: str, store_b: str) -> dict[str, Any]:
    from rlpt_plugin.megatron.data.suffix_dataset import SuffixDatasetConfig, blend_with_gpt, build_suffix_datasets

    def config(seed: int, blend: tuple) -> SuffixDatasetConfig:
        return SuffixDatasetConfig(random_seed=seed, sequence_length=16, blend=blend, split="100,0,0",
                                   suffix_length=N, tokenizer_fingerprint="f" * 64)

    def windows(ds: Any, n: int) -> list[tuple[int, ...]]:
        return [tuple(ds[i]["window"].tolist()) + (len(ds[i]["prefix"]),) for i in range(n)]

    single = build_suffix_datasets(config(1, ([store_a], None)), [12, None, None])[0]
    again = build_suffix_datasets(config(1, ([store_a], None)), [12, None, None])[0]
    other_seed = build_suffix_datasets(config(2, ([store_a], None)), [12, None, None])[0]
    blended = build_suffix_datasets(config(1, ([store_a, store_b], [0.5, 0.5])), [40, 0, 0])[0]
    sample = single[0]
    gpt_mix = blend_with_gpt([single, other_seed], [0.7, 0.3], 10, config(1, ([store_a], None)))
    return {
        "len": len(single), "order": windows(single, 12), "again": windows(again, 12),
        "other_seed": windows(other_seed, 12), "blended_len": len(blended),
        "blended_prefix_lengths": sorted({len(blended[i]["prefix"]) for i in range(len(blended))}),
        "sample_keys": sorted(sample), "tokens_shape": tuple(sample["tokens"].shape),
        "lm_tail": (sample["labels"][sample["loss_mask"] > 0][-N:].tolist(), sample["original"].tolist()),
        "gpt_mix_len": len(gpt_mix),
    }


def store_dir(tmp: Path, name: str, num: int, seed: int = 0) -> Path:
    from rlpt_plugin.megatron.data.rewritten_store import write_store

    write_store(tmp / name, records(num, seed), manifest())
    return tmp / name
