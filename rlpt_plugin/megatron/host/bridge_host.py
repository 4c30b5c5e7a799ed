"""Megatron-Bridge as the host: the plugin enters through Bridge's public extension points.

- :class:`RLPTConfigContainer`: Bridge's ``ConfigContainer`` plus an ``rlpt`` section, so
  ``rlpt.*`` and Bridge's own fields take the same Hydra-syntax overrides and both land in the
  checkpoint's ``run_config.yaml``.
- :class:`RLPTDataProvider`: a Bridge ``DatasetProvider`` (``dataloader_type="external"``)
  whose training "dataset" is a feed of packed micro-batches.
- :class:`RLPTCallback`: builds the step source at train start and each step's micro-batches at
  step start, outside the schedule (reference log-probs need a pass through every stage).
- :func:`rlpt_pretrain`: validates everything up front, then calls Bridge's real ``pretrain()``
  with the plugin's forward step.

Resume: the step source is a pure function of the step index, which Bridge's checkpoint
restores, so a resumed run sees exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch

from megatron.bridge.training.callbacks import Callback, CallbackContext
from megatron.bridge.training.config import ConfigContainer, DatasetBuildContext, DatasetProvider

from rlpt_plugin.config import ConfigError, RLPTConfig
from rlpt_plugin.judge.watchdog import UnjudgedWatchdog
from rlpt_plugin.megatron import parallel
from rlpt_plugin.megatron.host.compat import NO_LOADER_STATE, keep_build_tokenizer
from rlpt_plugin.megatron.step.forward_step import RLPTForwardStep
from rlpt_plugin.megatron.candidates.frozen_reference import frozen_reference
from rlpt_plugin.megatron.candidates.reference import ReferenceScorer
from rlpt_plugin.megatron.step.step_source import StepSource
from rlpt_plugin.megatron.host.validation import host_errors, layout_errors
from rlpt_plugin.plan_config import lm_rows_packed
from rlpt_plugin.rl.packing import PackSpec
from rlpt_plugin.rl.step import StepMicroBatch
from rlpt_plugin.rl.synthetic import SyntheticGroups


@dataclass(kw_only=True)
class RLPTConfigContainer(ConfigContainer):
    """A Bridge job config with the self-improving-pretraining section."""

    rlpt: RLPTConfig = field(default_factory=RLPTConfig)

    def validate(self) -> None:
        errors = self.rlpt.errors() + host_errors(self)
        if errors:
            raise ConfigError(errors)
        job_data = self.dataset.job_data
        if self.rlpt.data.job_sequences_per_step and hasattr(job_data, "finalize"):
            job_data.finalize()  # Bridge finalizes the job's dataset config only when it is cfg.dataset
        super().validate()


def with_rlpt(cfg: ConfigContainer, rlpt: RLPTConfig | None = None, *, stores: list[str] | None = None,
              tokenizer: str | None = None, job_sequences_per_step: int | None = None) -> RLPTConfigContainer:
    """An existing Bridge job config turned into a self-improving one.

    Every field of ``cfg`` is kept (model, parallelism, optimizer, schedule, checkpointing,
    logging); the ``rlpt`` section is added and the data switches to the plugin's provider,
    which keeps the job's own dataset config as ``dataset.job_data``.
    ``stores`` (rewritten stores, blended by size) and ``tokenizer`` (their tokenizer) point the
    data at ``rlpt rewrite`` output: ``rlpt.data.source=store``. ``job_sequences_per_step``
    blends the job's own data into the LM term: that many of its sequences per step (also
    ``rlpt.data.job_sequences_per_step=...`` on the command line).
    """
    values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.init}
    job_data = cfg.dataset.job_data if isinstance(cfg.dataset, RLPTDataProvider) else cfg.dataset
    values["dataset"] = RLPTDataProvider(job_data=job_data)
    rlpt = rlpt or RLPTConfig()
    if stores is not None:
        rlpt.data.source, rlpt.data.stores = "store", [str(p) for p in stores]
    if tokenizer is not None:
        rlpt.data.tokenizer = str(tokenizer)
    if job_sequences_per_step is not None:
        rlpt.data.job_sequences_per_step = job_sequences_per_step
    return RLPTConfigContainer(**values, rlpt=rlpt)


class StepFeed(Iterator[StepMicroBatch]):
    """What Bridge iterates: forwards to the step source the callback attaches at train start.

    ``save_state`` is Bridge's data-loader checkpoint hook (called at every checkpoint, per
    data-parallel rank, when ``dataset.dataloader_save`` is set); Bridge never loads it back,
    so :class:`RLPTCallback` does, at train start.
    """

    def __init__(self) -> None:
        self.source: StepSource | None = None

    def save_state(self) -> dict:
        return self.source.state_dict() if self.source is not None else {}

    def __next__(self) -> StepMicroBatch:
        if self.source is None:
            raise RuntimeError("the rlpt step source is not attached: pass the callbacks from "
                               "rlpt_plugin.megatron.host.bridge_host.rlpt_pretrain to pretrain()")
        return next(self.source)


@dataclass(kw_only=True)
class RLPTDataProvider(DatasetProvider):
    """Training data for the rlpt loss; the groups themselves are described by ``rlpt.data``."""

    dataloader_type: str | None = "external"
    num_workers: int = 0
    pin_memory: bool = False
    dataloader_save: str | None = NO_LOADER_STATE
    """Where Bridge saves the step source's state with each checkpoint (set by rlpt_pretrain
    to ``checkpoint.save`` when the in-loop stage has pools in flight across steps; "" = never,
    on both Bridge versions: see compat.py)."""
    job_data: Any = None
    """The job's own dataset config (kept by with_rlpt): the source of
    ``rlpt.data.job_sequences_per_step`` (rlpt_plugin/megatron/data/job_data.py)."""

    def build_datasets(self, context: DatasetBuildContext) -> tuple[Any, Any, Any]:
        keep_build_tokenizer(self, context)
        feed = StepFeed()
        object.__setattr__(self, "_train_feed", feed)  # runtime object: not a config field
        return feed, None, None

    @property
    def train_feed(self) -> StepFeed:
        feed = getattr(self, "_train_feed", None)
        if feed is None:
            raise RuntimeError("RLPTDataProvider.build_datasets() has not run yet")
        return feed


def pack_spec_flags(cfg: RLPTConfigContainer) -> dict[str, bool]:
    """Which rows the data carries. Under the dpo rule the best candidate IS the chosen one, so
    its RF-NLL row costs nothing and its NLL is always reported, trained on or not."""
    loss = cfg.rlpt.loss
    rl = loss.has_rl_terms()  # next-token-only runs carry LM rows only
    use_dpo = rl and loss.selection == "dpo"
    return dict(lm_on_window=lm_rows_packed(cfg.rlpt), use_dpo=use_dpo,
                use_rf_nll=use_dpo or (rl and bool(loss.rf_nll.start or loss.rf_nll.end)),
                use_grpo=rl and loss.selection == "grpo")


def in_loop(cfg: RLPTConfigContainer) -> bool:
    """Whether the run builds candidate pools in the loop (rollouts + judge)."""
    return cfg.rlpt.data.source == "store" and cfg.rlpt.loss.has_rl_terms()


def pack_spec(cfg: RLPTConfigContainer, shared_rows: bool = False) -> PackSpec:
    lay = parallel.layout()
    return PackSpec(
        seq_length=cfg.model.seq_length, micro_batch_size=cfg.train.micro_batch_size,
        num_microbatches=cfg.train.global_batch_size // (cfg.train.micro_batch_size * lay.dp_size),
        ref_from_rollout=in_loop(cfg) and cfg.rlpt.loss.reference == "rollout",
        shared_rows=shared_rows, **pack_spec_flags(cfg))


def wants_shared_rows(cfg: RLPTConfigContainer) -> bool:
    """Whether the config asks for prefix-shared rows and the step has rows to share."""
    flags = pack_spec_flags(cfg)
    return cfg.rlpt.data.prefix_sharing != "unpacked" and (flags["use_dpo"] or flags["use_rf_nll"]
                                                           or flags["use_grpo"])


def resolve_shared_rows(cfg: RLPTConfigContainer, model: list[torch.nn.Module]) -> bool:
    """Shared rows on the built model: on where exact; ``shared`` refuses, ``auto`` falls back
    to unpacked rows with a warning, when the attention path would not apply the mask."""
    if not wants_shared_rows(cfg):
        return False
    from rlpt_plugin.megatron.step.shared_attention import shared_rows_errors

    errors = shared_rows_errors(model)
    if getattr(cfg.model, "pipeline_model_parallel_size", 1) > 1 and not getattr(cfg.model, "variable_seq_lengths", False):
        errors.append("under pipeline parallelism the shared rows' wider micro-batches need "
                      "`model.variable_seq_lengths=True`, which megatron-core refuses with an MoE model's "
                      f"{getattr(cfg.model, 'moe_token_dispatcher_type', None)!r} token dispatcher")
    if not errors:
        return True
    if cfg.rlpt.data.prefix_sharing == "shared":
        raise ConfigError([f"`rlpt.data.prefix_sharing` is 'shared', but {e}; set "
                           "rlpt.data.prefix_sharing=unpacked (or auto)." for e in errors])
    warnings.warn("rlpt: prefix-shared rows are off (rlpt.data.prefix_sharing=auto), unpacked rows "
                  "instead, because " + "; ".join(errors), stacklevel=1)
    return False


def group_source(cfg: RLPTConfigContainer) -> SyntheticGroups:
    data = cfg.rlpt.data
    s = data.synthetic
    return SyntheticGroups(vocab_size=cfg.tokenizer.vocab_size or cfg.model.vocab_size, seed=data.seed,
                           min_prefix=s.min_prefix, max_prefix=s.max_prefix,
                           suffix_length=s.suffix_length, num_rollouts=s.num_rollouts,
                           include_original=s.include_original)


class RLPTCallback(Callback):
    """Attaches the step source at train start and prepares each step before it runs."""

    def __init__(self) -> None:
        self.source: StepSource | None = None

    def on_train_start(self, context: CallbackContext) -> None:
        cfg: RLPTConfigContainer = context.state.cfg
        step = context.state.train_state.step
        mode = cfg.rlpt.loss.reference
        # rollout mode needs no model pass here: in-loop pools record their log-probs when they
        # are built, and ready-made groups use the step's own forward (reference_is_policy).
        reference = None
        if mode == "frozen" and cfg.rlpt.loss.has_rl_terms():
            reference = ReferenceScorer(frozen_reference(
                context.model, step=step, save_root=cfg.checkpoint.save, load_root=cfg.checkpoint.load))
        stage = None
        if in_loop(cfg):
            from rlpt_plugin.megatron.candidates.stage_factory import build_stage

            stage, groups = build_stage(cfg, context.model), None
        elif cfg.rlpt.data.source == "store":  # next-token training on the store's windows
            from rlpt_plugin.megatron.candidates.stage_factory import original_groups

            groups = original_groups(cfg)
        else:
            stage, groups = None, group_source(cfg).group
        lm_rows = None
        if cfg.rlpt.data.job_sequences_per_step:
            from rlpt_plugin.megatron.data.job_data import job_rows

            lm_rows = job_rows(cfg)
        think = None
        if cfg.rlpt.data.think_sequences_per_step:
            from rlpt_plugin.megatron.data.think_dataset import think_rows

            think = think_rows(cfg)
        self.source = StepSource(groups, groups_per_step=cfg.rlpt.data.groups_per_step,
                                 spec=pack_spec(cfg, resolve_shared_rows(cfg, context.model)),
                                 rule=cfg.rlpt.loss.selection,
                                 fallback=cfg.rlpt.judge.fallback if stage is not None else "drop",
                                 reference=reference, start_step=step,
                                 vocab_size=cfg.model.vocab_size, stage=stage,
                                 lm_rows=lm_rows, lm_rows_per_step=cfg.rlpt.data.job_sequences_per_step,
                                 think_rows=think, think_rows_per_step=cfg.rlpt.data.think_sequences_per_step,
                                 watchdog=UnjudgedWatchdog(max_share=cfg.rlpt.judge.max_unjudged_share,
                                                           window=cfg.rlpt.judge.unjudged_window)
                                 if stage is not None else None)
        cfg.dataset.train_feed.source = self.source
        if step > 0 and stage is not None:
            self._restore(cfg, step)

    def _restore(self, cfg: RLPTConfigContainer, step: int) -> None:
        root = cfg.checkpoint.load or cfg.checkpoint.save
        path = Path(root or "") / f"iter_{step:07d}" / f"train_dataloader_dprank{parallel.layout().dp_rank:03d}.pt"
        if path.exists():
            self.source.load_state_dict(torch.load(path, weights_only=True)["dataloader_state_dict"])
        elif cfg.rlpt.candidates.staleness > 0:
            warnings.warn(f"rlpt: {path} is missing: the candidate pools in flight at step {step} are "
                          "lost and will be rebuilt with the current policy (the resumed run is not "
                          "exactly the uninterrupted one)", stacklevel=1)

    def on_train_step_start(self, context: CallbackContext) -> None:
        assert self.source is not None
        self.source.prepare(context.state.train_state.step)

    def on_train_end(self, context: CallbackContext) -> None:
        self.close()

    def close(self) -> None:
        """Stop the judge's thread, close its client and cache (idempotent; also on error)."""
        if self.source is not None:
            self.source.close()


def forward_step(cfg: RLPTConfigContainer) -> RLPTForwardStep:
    spec = pack_spec_flags(cfg)
    # the job's own data and the think stores' rows are LM rows too
    lm = spec["lm_on_window"] or bool(cfg.rlpt.data.job_sequences_per_step or cfg.rlpt.data.think_sequences_per_step)
    terms = {name for name, on in (("lm", lm), ("dpo", spec["use_dpo"]),
                                   ("rf_nll", spec["use_rf_nll"]), ("grpo", spec["use_grpo"])) if on}
    loss = cfg.rlpt.loss
    # Ready-made groups in rollout mode: the reference is this step's policy (no extra pass).
    reference_is_policy = loss.reference == "rollout" and not in_loop(cfg)
    return RLPTForwardStep(loss.loss_config(), loss.weights(), check_values=loss.check_values,
                           terms=frozenset(terms), reference_is_policy=reference_is_policy)


def rlpt_pretrain(cfg: RLPTConfigContainer, extra_callbacks: list[Callback] | None = None) -> None:
    """Run Bridge's ``pretrain()`` with the plugin's forward step, data and callbacks."""
    from rlpt_plugin.megatron.host.bridge_cpu import enable_bridge_cpu

    enable_bridge_cpu()  # no-op with CUDA present (then only rlpt_plugin.patches apply)
    from megatron.bridge.training.pretrain import pretrain

    errors = cfg.rlpt.errors() + host_errors(cfg) + layout_errors(cfg, _world_size())
    if errors:
        raise ConfigError(errors)
    if in_loop(cfg) and cfg.rlpt.candidates.staleness > 0 and cfg.checkpoint.save:
        cfg.dataset.dataloader_save = cfg.checkpoint.save  # pools in flight go into checkpoints
    if wants_shared_rows(cfg) and getattr(cfg.model, "pipeline_model_parallel_size", 1) > 1 \
            and not getattr(cfg.model, "num_moe_experts", None):
        # Shared micro-batches are wider than model.seq_length, the shape Bridge hands the
        # pipeline schedule: the stages must send each other the actual shape. megatron-core
        # refuses variable_seq_lengths with the (default) allgather MoE dispatcher even for a
        # dense model, which never dispatches: alltoall there is a no-op setting.
        cfg.model.variable_seq_lengths = True
        if getattr(cfg.model, "moe_token_dispatcher_type", None) == "allgather":
            cfg.model.moe_token_dispatcher_type = "alltoall"
    callback = RLPTCallback()
    try:
        pretrain(cfg, forward_step(cfg), callbacks=[callback, *(extra_callbacks or [])])
    finally:  # an error, a judge stop or exit_interval's sys.exit must not leave the judge running
        callback.close()


def _world_size() -> int:
    """Processes of the job, as torchrun / the launcher set them (1 when unset)."""
    import os

    return int(os.environ.get("WORLD_SIZE", "1"))
