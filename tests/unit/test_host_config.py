"""Bridge ConfigContainer + rlpt section: Hydra overrides, host cross-checks, FP8 without TE.

Builds configs only (no training), so it runs in the pytest process.
"""

from __future__ import annotations

import pytest

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host import launch, validation

RECIPE = "rlpt_plugin.recipes.tiny:tiny_config"


def test_rlpt_and_bridge_fields_take_the_same_override_syntax(tmp_path):
    cfg = launch.build_config(RECIPE, tmp_path, [
        "rlpt.loss.beta=0.05", "rlpt.loss.reference=none", "rlpt.loss.dpo.kind=linear",
        "rlpt.loss.dpo.end=2.0", "rlpt.loss.dpo.end_step=10", "rlpt.data.groups_per_step=16",
        "model.tensor_model_parallel_size=2", "train.global_batch_size=48", "optimizer.lr=1e-4"])
    assert cfg.rlpt.loss.beta == 0.05 and cfg.rlpt.loss.reference == "none"
    assert cfg.rlpt.loss.weights().at(10).dpo == 2.0
    assert cfg.rlpt.data.groups_per_step == 16
    assert cfg.model.tensor_model_parallel_size == 2
    assert cfg.train.global_batch_size == 48 and cfg.optimizer.lr == 1e-4


def test_bad_overrides_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as info:
        launch.build_config(RECIPE, tmp_path, ["rlpt.loss.beta=0", "rlpt.loss.reference=frozn",
                                               "model.calculate_per_token_loss=true"])
    message = str(info.value)
    assert "`rlpt.loss.beta` must be > 0" in message
    assert "`rlpt.loss.reference`" in message
    assert "`model.calculate_per_token_loss` must be False" in message


def test_unknown_override_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="override rejected"):
        launch.build_config(RECIPE, tmp_path, ["rlpt.loss.betta=0.1"])


def test_tokenizer_vocab_larger_than_model_vocab(tmp_path):
    with pytest.raises(ConfigError, match=r"`tokenizer.vocab_size` \(500\) must be <= `model.vocab_size` \(128\)"):
        launch.build_config(RECIPE, tmp_path, ["tokenizer.vocab_size=500"])


@pytest.mark.skipif(validation.transformer_engine_available(), reason="Transformer Engine is installed")
def test_fp8_without_transformer_engine_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="Transformer Engine is not installed"):
        launch.build_config(RECIPE, tmp_path, ["model.fp8=hybrid"])


def test_unknown_recipe_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot be imported"):
        launch.build_config("no_such_pkg.recipes:x", tmp_path, [])
    with pytest.raises(ConfigError, match="has no callable"):
        launch.build_config("rlpt_plugin.recipes.tiny:nope", tmp_path, [])


def test_with_rlpt_keeps_every_setting_of_an_existing_job(tmp_path):
    from megatron.bridge.training.config import ConfigContainer

    from rlpt_plugin.megatron.host.bridge_host import RLPTConfigContainer, RLPTDataProvider, with_rlpt

    job = launch.build_config(RECIPE, tmp_path, ["optimizer.lr=7e-4", "model.num_layers=3"])
    plain = ConfigContainer(**{k: getattr(job, k) for k in ("model", "train", "optimizer", "scheduler",
                                                             "dataset", "logger", "tokenizer", "checkpoint",
                                                             "dist", "rng")})
    cfg = with_rlpt(plain)
    assert isinstance(cfg, RLPTConfigContainer) and isinstance(cfg.dataset, RLPTDataProvider)
    assert cfg.optimizer.lr == 7e-4 and cfg.model.num_layers == 3 and cfg.model is plain.model
    assert cfg.checkpoint is plain.checkpoint and cfg.rlpt.loss.reference == "rollout"


def test_with_rlpt_points_an_existing_job_at_rewritten_stores(tmp_path):
    """A plain Bridge job on Megatron's GPT data, pointed at rewritten stores: every setting of
    the job stays, the rlpt section validates, only the data changes."""
    from megatron.bridge.training.config import ConfigContainer, GPTDatasetConfig

    from rlpt_plugin.megatron.host.bridge_host import RLPTDataProvider, with_rlpt

    job = launch.build_config(RECIPE, tmp_path, ["optimizer.lr=7e-4"])
    gpt_data = GPTDatasetConfig(random_seed=1, sequence_length=job.model.seq_length,
                                blend=([str(tmp_path / "corpus_text_document")], None), split="99,1,0",
                                reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False)
    plain = ConfigContainer(**{k: getattr(job, k) for k in ("model", "train", "optimizer", "scheduler",
                                                             "logger", "tokenizer", "checkpoint", "dist", "rng")},
                            dataset=gpt_data)
    cfg = with_rlpt(plain, stores=[tmp_path / "s0", tmp_path / "s1"], tokenizer=str(tmp_path / "tok"))
    assert cfg.model is plain.model and cfg.optimizer.lr == 7e-4 and cfg.scheduler is plain.scheduler
    assert isinstance(cfg.dataset, RLPTDataProvider)
    assert cfg.rlpt.data.source == "store" and cfg.rlpt.data.stores == [str(tmp_path / "s0"), str(tmp_path / "s1")]
    assert any("rlpt.judge.endpoints" in e for e in cfg.rlpt.errors())  # the judge is still to name
    cfg.rlpt.judge.endpoints, cfg.rlpt.judge.model = ["http://judge-0:8000/v1"], "judge"
    assert cfg.rlpt.errors() == []


def test_gloo_pipeline_with_batched_p2p_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="`model.batch_p2p_comm` must be False"):
        launch.build_config(RECIPE, tmp_path, ["model.pipeline_model_parallel_size=2",
                                               "model.batch_p2p_comm=true"])


def test_stores_on_the_command_line_of_a_plain_job_train_on_the_stores(tmp_path):
    """The README's way to point a team's recipe at stores used to train on synthetic groups."""
    cfg = launch.build_config("tests.bridge.job_recipe:plain_job", tmp_path, [
        "rlpt.data.stores=[/data/stores/part0]", "rlpt.data.tokenizer=/models/tok",
        "rlpt.judge.endpoints=[http://judge-0:8000/v1]", "rlpt.judge.model=judge"])
    assert cfg.rlpt.data.source == "store"
    with pytest.raises(ConfigError, match=r"`rlpt.data.stores` must list"):
        launch.build_config("tests.bridge.job_recipe:plain_job", tmp_path / "b", [])


def test_dropout_with_a_model_pass_reference_is_an_error(tmp_path):
    store = ["rlpt.data.source=store", "rlpt.data.stores=[/s]", "rlpt.data.tokenizer=/t",
             "rlpt.judge.backend=world"]
    with pytest.raises(ConfigError, match=r"`model.hidden_dropout` is 0.1, but `rlpt.loss.reference` is 'rollout'"):
        launch.build_config(RECIPE, tmp_path, [*store, "model.hidden_dropout=0.1"])
    with pytest.raises(ConfigError, match=r"`model.attention_dropout` is 0.1, but `rlpt.loss.reference` is 'frozen'"):
        launch.build_config(RECIPE, tmp_path, ["model.attention_dropout=0.1", "rlpt.loss.reference=frozen"])
    # Ready-made groups in rollout mode use the step's own forward (same dropout): fine, as is none.
    launch.build_config(RECIPE, tmp_path, ["model.hidden_dropout=0.1"])
    launch.build_config(RECIPE, tmp_path, [*store, "model.hidden_dropout=0.1", "rlpt.loss.reference=none"])


def test_data_parallel_split_and_micro_batch_rows_are_checked_at_setup(tmp_path):
    """Used to fail on the step that first tripped them, deep in the loop."""
    cfg = launch.build_config(RECIPE, tmp_path, ["rlpt.data.groups_per_step=6", "train.global_batch_size=48",
                                                 "train.micro_batch_size=6"])
    assert validation.layout_errors(cfg, world_size=1) == []
    (error,) = validation.layout_errors(cfg, world_size=4)  # DP4: 6 prefixes do not split
    assert "`rlpt.data.groups_per_step` (6) must be divisible by the data-parallel size 4" in error
    assert validation.layout_errors(cfg, world_size=3) == [  # DP3 splits 6 prefixes, not 48 rows of 6
        "`train.global_batch_size` (48) must be a multiple of micro_batch_size x data-parallel size (6 x 3)."]
    # 8 prefixes x 3 rows (LM + chosen + rejected) on one rank in 2 micro-batches of 6 rows: 12 > 6
    tight = launch.build_config(RECIPE, tmp_path, ["train.global_batch_size=12", "train.micro_batch_size=6"])
    (error,) = validation.layout_errors(tight, world_size=1)
    assert "up to 12 rows" in error and "`train.micro_batch_size` is 6" in error
    assert "up to 12 rows" in validation.layout_errors(tight, world_size=2)[0]  # DP2: 4 prefixes, 1 micro-batch
    default = launch.build_config(RECIPE, tmp_path, [])  # 8 prefixes, global batch 24 of 6
    assert validation.layout_errors(default, world_size=4) == []  # DP4: 2 prefixes x 3 rows in 6
    tp = launch.build_config(RECIPE, tmp_path, ["model.tensor_model_parallel_size=2"])
    assert "not a multiple of the model-parallel size 2" in validation.layout_errors(tp, world_size=3)[0]


def test_a_thinking_rollout_must_fit_a_row_and_needs_rollouts(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    (store / "manifest.json").write_text('{"suffix_length": 8}')
    base = ["rlpt.data.source=store", f"rlpt.data.stores=[{store}]", "rlpt.data.tokenizer=/t",
            "rlpt.judge.backend=world", "model.seq_length=32"]
    cfg = launch.build_config(RECIPE, tmp_path / "ok", [*base, "rlpt.candidates.thinking_budget=23"])
    assert cfg.rlpt.candidates.thinking_budget == 23  # 23 + 8 = 31 = seq_length - 1: fits
    with pytest.raises(ConfigError, match=r"thinking_budget` \(24\) \+ the stores' suffix length N \(8\) must be "
                                          r"<= model.seq_length - 1 \(31\)"):
        launch.build_config(RECIPE, tmp_path / "long", [*base, "rlpt.candidates.thinking_budget=24"])
    with pytest.raises(ConfigError, match=r"thinking_budget` is 4, but the pool has no rollouts"):
        launch.build_config(RECIPE, tmp_path / "none", [*base, "rlpt.candidates.thinking_budget=4",
                                                        "rlpt.candidates.num_rollouts=0"])
