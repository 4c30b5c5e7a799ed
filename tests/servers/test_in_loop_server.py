"""A short in-loop run through Bridge's pretrain() with llama.cpp's server as the judge, asking for
structured verdicts: rollouts from the live policy, a real third-party server, 0 judge failures
even from its random-weight model."""

from __future__ import annotations

import pytest

from tests.bridge.cases import store_case
from tests.bridge.test_in_loop import rewritten_store
from tests.distributed.harness import run_distributed
from tests.servers.conftest import MODEL_ALIAS, SERVERS

pytestmark = [*SERVERS, pytest.mark.bridge, pytest.mark.distributed]


def test_in_loop_training_against_llama_cpp_with_structured_verdicts(tmp_path, llama_server):
    tok, store = rewritten_store(tmp_path)  # rewritten by the project's loopback teacher
    overrides = ["rlpt.data.source=store", f"rlpt.data.stores=[{store}]", f"rlpt.data.tokenizer={tok}",
                 f"rlpt.judge.endpoints=[{llama_server}]", f"rlpt.judge.model={MODEL_ALIAS}",
                 "rlpt.judge.structured_output=auto", "rlpt.judge.max_tokens=1024",
                 "rlpt.judge.safety=1.0", "rlpt.candidates.num_rollouts=2", "rlpt.data.groups_per_step=2",
                 "model.vocab_size=256", "tokenizer.vocab_size=202", "model.seq_length=32",
                 "train.micro_batch_size=6", "train.global_batch_size=6", "train.train_iters=2",
                 "checkpoint.save=null", "checkpoint.load=null"]
    (records,) = run_distributed(store_case, 1, tmp_path / "w", str(tmp_path), overrides)
    assert [r["step"] for r in records] == [0, 1]
    for r in records:
        assert r["judge_failures"] == 0 and r["judge_parse_failures"] == 0 and r["unjudged_pool_rate"] == 0.0
        assert r["judge_calls_per_prefix"] > 0
