"""Bridge's shipped recipes under ``rlpt train``: how they are called and the CPU layer spec."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rlpt_plugin.config import ConfigError
from rlpt_plugin.megatron.host import recipe_host


def test_a_recipe_without_arguments_writes_under_out(tmp_path):
    def shipped():  # Bridge's recipes take no arguments and write under ./nemo_experiments
        return SimpleNamespace(checkpoint=SimpleNamespace(save="nemo_experiments/c", load="nemo_experiments/c"),
                               logger=SimpleNamespace(tensorboard_dir="nemo_experiments/tb"))

    cfg = recipe_host.call_recipe(shipped, tmp_path)
    assert cfg.checkpoint.save == cfg.checkpoint.load == str(tmp_path / "ckpt")
    assert cfg.logger.tensorboard_dir == str(tmp_path / "tb")
    seen = []
    assert recipe_host.call_recipe(lambda out_dir, train_iters=3: seen.append(out_dir) or "cfg", tmp_path) == "cfg"
    assert seen == [tmp_path]  # the plugin's recipes get the output directory


def test_transformer_impl_local_takes_bridges_local_spec():
    from megatron.bridge.models.gpt_provider import default_layer_spec, local_layer_spec

    model = SimpleNamespace(transformer_layer_spec=default_layer_spec, transformer_impl="local")
    recipe_host.cpu_layer_spec(model)
    assert model.transformer_layer_spec is local_layer_spec
    custom = SimpleNamespace(transformer_layer_spec=print, transformer_impl="transformer_engine")
    recipe_host.cpu_layer_spec(custom)  # not one of Bridge's TE specs: left alone
    assert custom.transformer_layer_spec is print


def test_a_te_spec_without_transformer_engine_is_a_setup_error():
    from megatron.bridge.models.gpt_provider import default_layer_spec

    if recipe_host.transformer_engine_available():
        pytest.skip("Transformer Engine is installed")
    model = SimpleNamespace(transformer_layer_spec=default_layer_spec, transformer_impl="transformer_engine")
    with pytest.raises(ConfigError, match=r"`model.transformer_layer_spec` is Bridge's default_layer_spec"):
        recipe_host.cpu_layer_spec(model)
