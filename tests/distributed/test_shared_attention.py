"""Which built models compute prefix-shared rows exactly, and what the config does otherwise."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import pytest

from rlpt_plugin.config import ConfigError, RLPTConfig
from tests.distributed.cases import attention_path_case
from tests.distributed.harness import run_distributed

pytestmark = pytest.mark.distributed


def test_only_the_unfused_local_path_is_accepted(tmp_path):
    (res,) = run_distributed(attention_path_case, 1, tmp_path)
    assert res["local fp32"] == []
    assert any("masked_softmax_fusion" in e for e in res["fused softmax bf16"]), res
    assert any("apply_rope_fusion" in e for e in res["fused rope"]), res


def _cfg(mode: str) -> SimpleNamespace:
    rlpt = RLPTConfig()
    rlpt.data.source, rlpt.data.prefix_sharing = "synthetic", mode
    return SimpleNamespace(rlpt=rlpt, model=SimpleNamespace(pipeline_model_parallel_size=1))


def test_shared_refuses_auto_falls_back_loudly_unpacked_never_asks(monkeypatch):
    from rlpt_plugin.megatron.host import bridge_host

    from rlpt_plugin.megatron.step import shared_attention
    monkeypatch.setattr(shared_attention, "shared_rows_errors", lambda model: ["the attention is X"])
    with pytest.raises(ConfigError, match="`rlpt.data.prefix_sharing` is 'shared', but the attention is X"):
        bridge_host.resolve_shared_rows(_cfg("shared"), [])
    with pytest.warns(UserWarning, match="prefix-shared rows are off .* because the attention is X"):
        assert bridge_host.resolve_shared_rows(_cfg("auto"), []) is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bridge_host.resolve_shared_rows(_cfg("unpacked"), []) is False
    monkeypatch.setattr(shared_attention, "shared_rows_errors", lambda model: [])
    assert bridge_host.resolve_shared_rows(_cfg("auto"), []) is True
    lm_only = _cfg("shared")
    lm_only.rlpt.loss.dpo.start = 0.0
    assert bridge_host.resolve_shared_rows(lm_only, []) is False  # one row per prefix: nothing to share
    assert "rlpt.data.prefix_sharing" in " ".join(_bad_mode_errors())
    moe_pp = _cfg("auto")
    moe_pp.model = SimpleNamespace(pipeline_model_parallel_size=2, variable_seq_lengths=False,
                                   moe_token_dispatcher_type="allgather")
    with pytest.warns(UserWarning, match="variable_seq_lengths"):
        assert bridge_host.resolve_shared_rows(moe_pp, []) is False


def _bad_mode_errors() -> list[str]:
    rlpt = RLPTConfig()
    rlpt.data.prefix_sharing = "yes"
    return rlpt.errors()
