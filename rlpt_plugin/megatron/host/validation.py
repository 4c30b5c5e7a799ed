"""Cross-checks between the ``rlpt`` section and the host (Bridge/megatron) config.

Everything that would otherwise fail deep in the loop, or silently do nothing, is reported at
setup, all at once, each naming the field, the constraint and the bad value.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

FP8_FIELDS = ("fp8", "fp8_recipe", "fp8_param")
LATEST = "latest_checkpointed_iteration.txt"


def transformer_engine_available() -> bool:
    return importlib.util.find_spec("transformer_engine") is not None


def fp8_errors(model: Any, path: str = "model") -> list[str]:
    """FP8 requested without Transformer Engine: megatron-core would silently train without it."""
    if getattr(model, "fp8", None) in (None, False, "") or transformer_engine_available():
        return []
    return [f"`{path}.fp8` is {model.fp8!r}, but Transformer Engine is not installed: FP8 needs "
            "it (megatron-core would silently train in higher precision). Install "
            "transformer-engine[pytorch] on a CUDA machine or set model.fp8=null."]


def mixed_precision_fp8_errors(cfg: Any) -> list[str]:
    """FP8 asked for through Bridge's ``mixed_precision`` (a recipe name or a config), which
    Bridge applies to the model only when ``pretrain()`` starts: checked here, up front."""
    mp = getattr(cfg, "mixed_precision", None)
    if mp is None or transformer_engine_available():
        return []
    name = mp if isinstance(mp, str) else type(mp).__name__
    if isinstance(mp, str):
        from megatron.bridge.training.mixed_precision import get_mixed_precision_config

        try:
            mp = get_mixed_precision_config(mp)
        except (KeyError, ValueError) as err:
            return [f"`mixed_precision` {name!r} is not a Bridge mixed-precision recipe: {err}"]
    if getattr(mp, "fp8", None) in (None, False, ""):
        return []
    return [f"`mixed_precision` is {name!r}, which trains in FP8 ({mp.fp8!r}), but Transformer Engine "
            "is not installed: install transformer-engine[pytorch] on a CUDA machine, or choose "
            "mixed_precision=bf16_mixed (or null for fp32)."]


def job_data_errors(cfg: Any) -> list[str]:
    """``rlpt.data.job_sequences_per_step`` needs the job's own dataset, shaped like the model."""
    wanted = getattr(cfg.rlpt.data, "job_sequences_per_step", 0)
    if not isinstance(wanted, int) or wanted <= 0:
        return []
    job_data = getattr(getattr(cfg, "dataset", None), "job_data", None)
    if job_data is None:
        return [f"`rlpt.data.job_sequences_per_step` is {wanted}, but `dataset.job_data` is None: "
                "build the config with with_rlpt(job_config) (it keeps the job's own dataset there) "
                "or set dataset.job_data to a GPTDatasetConfig."]
    errors = []
    length = getattr(job_data, "sequence_length", None)
    if length is not None and length != cfg.model.seq_length:
        errors.append(f"`dataset.job_data.sequence_length` ({length}) must equal `model.seq_length` "
                      f"({cfg.model.seq_length}): its sequences share the step's micro-batches.")
    for name in ("reset_position_ids", "reset_attention_mask"):
        if getattr(job_data, name, False):
            errors.append(f"`dataset.job_data.{name}` must be False: rlpt micro-batches use one causal "
                          "mask and positions 0..S-1 per row, but it is True.")
    return errors


def think_store_errors(cfg: Any) -> list[str]:
    """Every ``rlpt.data.think_stores`` entry a think store with chunks (read from its manifest)."""
    from rlpt_plugin.megatron.data.think_store import FORMAT

    errors = []
    for i, store in enumerate(getattr(cfg.rlpt.data, "think_stores", [])):
        manifest = Path(store) / "manifest.json"
        if not manifest.is_file():
            errors.append(f"`rlpt.data.think_stores[{i}]` is {store!r}, which is not a think store (no "
                          "manifest.json): write one with rlpt rewrite --task think.")
            continue
        m = json.loads(manifest.read_text())
        if m.get("format") != FORMAT:
            errors.append(f"`rlpt.data.think_stores[{i}]` ({store!r}) has format {m.get('format')!r}, but a "
                          f"think store's is {FORMAT!r} (a rewritten store goes in rlpt.data.stores).")
        elif not m.get("num_chunks"):
            errors.append(f"`rlpt.data.think_stores[{i}]` ({store!r}) holds no chunks: every chunk was "
                          "dropped (its manifest's failures say why).")
    return errors


def host_errors(cfg: Any) -> list[str]:
    """Checks that need both the rlpt section and the Bridge ConfigContainer."""
    errors = (fp8_errors(cfg.model) + mixed_precision_fp8_errors(cfg) + job_data_errors(cfg)
              + dropout_errors(cfg) + thinking_errors(cfg) + think_store_errors(cfg))
    checkpoint = getattr(cfg, "checkpoint", None)
    pretrained = getattr(checkpoint, "pretrained_checkpoint", None)
    load = getattr(checkpoint, "load", None)
    if pretrained and not Path(pretrained).exists() and not (load and Path(load, LATEST).exists()):
        errors.append(f"`checkpoint.pretrained_checkpoint` is {pretrained!r}, which does not exist: "
                      "Bridge would silently start from random weights. Point it at the start "
                      "model's checkpoint (or set it to null to train from scratch).")
    model, train = cfg.model, cfg.train
    if getattr(model, "calculate_per_token_loss", False):
        errors.append("`model.calculate_per_token_loss` must be False: the rlpt loss normalises "
                      "each term by its own global count and undoes the schedule's averaging "
                      "(rlpt_plugin/megatron/step/forward_step.py), but it is True.")
    if getattr(model, "context_parallel_size", 1) != 1:
        errors.append("`model.context_parallel_size` must be 1 (context parallelism is not "
                      f"supported by the rlpt loss yet), but is {model.context_parallel_size}.")
    backend = getattr(getattr(cfg, "dist", None), "distributed_backend", None)
    if backend == "gloo" and getattr(model, "pipeline_model_parallel_size", 1) > 1 \
            and getattr(model, "batch_p2p_comm", True):
        errors.append("`model.batch_p2p_comm` must be False with the gloo backend under pipeline "
                      "parallelism (gloo silently mismatches batched sends: wrong losses, no "
                      "error), but it is True.")
    dataset = getattr(cfg, "dataset", None)
    if type(dataset).__name__ != "RLPTDataProvider":
        errors.append("`dataset` must be an RLPTDataProvider (rlpt_plugin.megatron.host.bridge_host), "
                      f"but is {type(dataset).__name__}.")
    vocab = getattr(cfg.tokenizer, "vocab_size", None)
    model_vocab = getattr(model, "vocab_size", None)
    if vocab is not None and model_vocab is not None and vocab > model_vocab:
        errors.append(f"`tokenizer.vocab_size` ({vocab}) must be <= `model.vocab_size` "
                      f"({model_vocab}): token ids past the embedding would index out of range.")
    mbs, gbs = train.micro_batch_size, train.global_batch_size
    if mbs and gbs and gbs % mbs:
        errors.append(f"`train.global_batch_size` ({gbs}) must be a multiple of "
                      f"`train.micro_batch_size` ({mbs}).")
    return errors


def dropout_errors(cfg: Any) -> list[str]:
    """A reference scored in eval mode (rollout-time or frozen, rlpt_plugin/megatron/candidates/reference.py
    and rollout.py) against a policy trained with dropout: the DPO log-ratio would carry the
    dropout noise and be biased even where policy and reference are the same weights."""
    rlpt, model = cfg.rlpt, cfg.model
    ready_made_rollout = rlpt.loss.reference == "rollout" and rlpt.data.source != "store"
    if not rlpt.loss.has_rl_terms() or rlpt.loss.reference == "none" or ready_made_rollout:
        return []
    return [f"`model.{name}` is {getattr(model, name)}, but `rlpt.loss.reference` is "
            f"{rlpt.loss.reference!r}: the reference log-probs are computed without dropout, the "
            "policy's with it, so the DPO log-ratio would be biased by the dropout noise. Set "
            f"model.{name}=0 (the usual choice for DPO) or rlpt.loss.reference=none."
            for name in ("hidden_dropout", "attention_dropout") if getattr(model, name, 0) or 0]


def thinking_errors(cfg: Any) -> list[str]:
    """A thinking rollout (thought budget + N answer tokens) must fit a training row after at
    least one prefix token, or packing would fail at the first step that trains on one."""
    rlpt = cfg.rlpt
    budget = rlpt.candidates.thinking_budget
    if not budget or rlpt.data.source != "store":
        return []
    n = _store_suffix_length(list(rlpt.data.stores))
    seq_length = cfg.model.seq_length
    if n is None or budget + n <= seq_length - 1:
        return []
    return [f"`rlpt.candidates.thinking_budget` ({budget}) + the stores' suffix length N ({n}) must be "
            f"<= model.seq_length - 1 ({seq_length - 1}): a thinking rollout and one prefix token must "
            "fit a training row. Lower the budget or raise model.seq_length."]


def _store_suffix_length(stores: list[str]) -> int | None:
    manifest = Path(stores[0]) / "manifest.json" if stores else None
    if manifest is None or not manifest.exists():
        return None
    return int(json.loads(manifest.read_text())["suffix_length"])


def layout_errors(cfg: Any, world_size: int) -> list[str]:
    """What the data-parallel size implies, checked before any process group exists: the step's
    prefixes and job rows split evenly over the replicas, and the most rows one micro-batch can
    need fit ``train.micro_batch_size`` (otherwise the step that first needs them fails)."""
    from rlpt_plugin.plan import max_rows_per_microbatch
    from rlpt_plugin.plan_config import plan_from_config

    model, train, rlpt = cfg.model, cfg.train, cfg.rlpt
    mp = (getattr(model, "tensor_model_parallel_size", 1) * getattr(model, "pipeline_model_parallel_size", 1)
          * getattr(model, "context_parallel_size", 1))
    if world_size % mp:
        return [f"the job has {world_size} processes, which is not a multiple of the model-parallel "
                f"size {mp} (tensor x pipeline x context parallel)."]
    dp = world_size // mp
    errors: list[str] = []
    for path, value in (("rlpt.data.groups_per_step", rlpt.data.groups_per_step),
                        ("rlpt.data.job_sequences_per_step", rlpt.data.job_sequences_per_step),
                        ("rlpt.data.think_sequences_per_step", rlpt.data.think_sequences_per_step)):
        if value % dp:
            errors.append(f"`{path}` ({value}) must be divisible by the data-parallel size {dp} "
                          f"({world_size} processes / model-parallel size {mp}).")
    mbs, gbs = train.micro_batch_size, train.global_batch_size
    if errors or not mbs or not gbs or gbs % (mbs * dp):
        if mbs and gbs and gbs % (mbs * dp):
            errors.append(f"`train.global_batch_size` ({gbs}) must be a multiple of micro_batch_size x "
                          f"data-parallel size ({mbs} x {dp}).")
        return errors
    store = rlpt.data.source == "store"
    n = _store_suffix_length(list(rlpt.data.stores)) if store else None
    if store and n is None:
        return errors  # the store itself is missing: its own error comes when it is opened
    try:
        p = plan_from_config(rlpt, seq_length=model.seq_length, suffix_length=n)
    except ValueError:
        return errors  # the rlpt section's own validation names it
    m = gbs // (mbs * dp)
    need = max_rows_per_microbatch(p, dp_size=dp, num_microbatches=m)
    if need > mbs:
        errors.append(f"a micro-batch can need up to {need} rows ({rlpt.data.groups_per_step // dp} prefixes "
                      f"and {rlpt.data.job_sequences_per_step // dp} job + "
                      f"{rlpt.data.think_sequences_per_step // dp} think sequences per data-parallel rank "
                      f"over {m} micro-batches, up to {(p.lm_rows + p.rl_rows) // rlpt.data.groups_per_step} "
                      f"rows per prefix), but `train.micro_batch_size` is {mbs}: raise "
                      "train.micro_batch_size (or train.global_batch_size), or lower rlpt.data.groups_per_step.")
    return errors
