"""The frozen DPO reference: a copy of the start weights that survives resume.

At step 0 the policy's chunks are copied and the copy is written once, with megatron's
``dist_checkpointing`` (sharded like the model, so it reshards across TP/PP like a normal
checkpoint), to ``<checkpoint.save>/rlpt_frozen_reference``. The write goes to a temporary
folder renamed into place after every rank finished, so a crash never leaves a half-written
reference. A resumed run (step > 0) loads it from ``checkpoint.load`` (or ``save``) instead of
copying the resumed weights, which are no longer the start weights.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import torch
import torch.distributed as dist
from megatron.core import dist_checkpointing
from megatron.core.process_groups_config import ProcessGroupCollection
from megatron.core.transformer import TransformerConfig

from rlpt_plugin.config import ConfigError

FOLDER = "rlpt_frozen_reference"


def _shared(obj: object) -> bool:
    # Process groups cannot be copied, and the copy must use the policy's groups and config.
    return isinstance(obj, (dist.ProcessGroup, TransformerConfig, ProcessGroupCollection))


def _shared_memo(module: torch.nn.Module) -> dict[int, object]:
    memo: dict[int, object] = {}
    for sub in module.modules():
        for value in vars(sub).values():
            if _shared(value):
                memo[id(value)] = value
                for inner in vars(value).values() if isinstance(value, ProcessGroupCollection) else ():
                    if _shared(inner):
                        memo[id(inner)] = inner
    return memo


def frozen_copy(model: list[torch.nn.Module]) -> list[torch.nn.Module]:
    """Detached copies of the policy chunks without their DDP wrapper."""
    chunks = []
    for chunk in model:
        inner = getattr(chunk, "module", chunk)
        ref = copy.deepcopy(inner, memo=_shared_memo(inner))
        for p in ref.parameters():
            p.requires_grad_(False)
        chunks.append(ref)
    return chunks


def _sharded(chunks: list[torch.nn.Module]) -> dict:
    return {f"model{i}": chunk.sharded_state_dict() for i, chunk in enumerate(chunks)}


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save(chunks: list[torch.nn.Module], root: Path) -> Path:
    final, tmp = root / FOLDER, root / f"{FOLDER}.tmp"
    if not dist.is_initialized() or dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    _barrier()
    dist_checkpointing.save(_sharded(chunks), str(tmp))
    _barrier()
    if not dist.is_initialized() or dist.get_rank() == 0:
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    _barrier()
    return final


def load(chunks: list[torch.nn.Module], path: Path) -> None:
    state = dist_checkpointing.load(_sharded(chunks), str(path))
    for i, chunk in enumerate(chunks):
        chunk.load_state_dict(state[f"model{i}"])


def frozen_reference(model: list[torch.nn.Module], *, step: int, save_root: str | None,
                     load_root: str | None) -> list[torch.nn.Module]:
    """The frozen reference chunks for a run starting (step 0) or resuming (step > 0)."""
    chunks = frozen_copy(model)
    if step == 0:
        if save_root:
            save(chunks, Path(save_root))
        return chunks
    candidates = [Path(r) / FOLDER for r in (load_root, save_root) if r]
    found = next((p for p in candidates if (p / "metadata.json").exists()), None)
    if found is None:
        raise ConfigError([
            f"`rlpt.loss.reference` is 'frozen' and the run resumes at step {step}, but no "
            f"frozen reference was found in {', '.join(map(str, candidates)) or '(no checkpoint dirs)'}: "
            "it is written at step 0 of a run with `checkpoint.save` set."])
    load(chunks, found)
    return chunks
