"""The world's oracle teacher behind the LLM teacher's protocols: rewrite CLI, pool judge, config."""

from __future__ import annotations

import asyncio
import json

import pytest

from rlpt_plugin.config import ConfigError, RLPTConfig
from rlpt_plugin.judge.pools import JudgePool
from rlpt_plugin.world import WorldConfig, WorldTokenizer, build_kb, generate_corpus, vocab, write_jsonl
from rlpt_plugin.world.teacher import OracleJudge, OracleRewriter
from rlpt_plugin.teacher.rewriter import RewriteInput

CFG = WorldConfig(seed=5, num_entities=30, docs_per_entity=2, false_rate=0.2, unsafe_rate=0.1,
                  degenerate_rate=0.1)
KB = build_kb(CFG)


# ---------------------------------------------------------------- rewrite CLI

def test_rewrite_cli_with_world_teacher(tmp_path):
    from rlpt_plugin.cli import main
    from rlpt_plugin.megatron.data.rewritten_store import RewrittenStore

    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, generate_corpus(CFG, KB))
    out = tmp_path / "store"
    rc = main(["rewrite", "--corpus", str(corpus), "--tokenizer", "world", "--teacher", "world",
               "--world-seed", "5", "--world-entities", "30", "--out", str(out),
               "--suffix-length", "8", "--min-prefix", "8", "--seq-length", "64", "--no-progress",
               "--world-knowledge", "1", "--world-rewrite-miss", "0", "--world-rewrite-error", "0"])
    assert rc == 0  # the exact oracle rewriter: every false value it touches is corrected
    manifest = json.loads((out / "manifest.json").read_text())
    counts = manifest["counts"]
    assert counts["rewritten"] > 0 and counts["copied"] > 0 and counts["failed"] == 0
    assert manifest["teacher"]["model_id"] == "world-oracle"
    assert manifest["teacher"]["world"] == {"seed": 5, "num_entities": 30}

    tok = WorldTokenizer()
    store = RewrittenStore(out, expect_tokenizer=tok.fingerprint)
    corrected = 0
    for i in range(len(store)):
        w = store[i]
        if w.status != "rewritten":
            continue
        prefix = tok.decode(w.prefix).split()
        original, rewrite = tok.decode(w.original).split(), tok.decode(w.rewrite).split()
        diff = [k for k, (a, b) in enumerate(zip(original, rewrite)) if a != b]
        if len(original) != len(rewrite) or len(diff) != 1:
            continue
        k = diff[0]
        if original[k] not in vocab.VALUE_ATTRIBUTE:
            continue
        # The only change is a value: the sentence's person is the last name before it.
        before = prefix + rewrite[:k]
        names = [(a, b) for a, b in zip(before, before[1:]) if KB.by_name(a, b) is not None]
        entity = KB.by_name(*names[-1])
        attribute = vocab.VALUE_ATTRIBUTE[original[k]]
        assert original[k] != entity.attributes[attribute]  # the original held a false value
        assert rewrite[k] == entity.attributes[attribute]   # the rewrite holds the KB's value
        corrected += 1
    assert corrected > 0


def test_the_function_writes_the_store_the_cli_writes(tmp_path):
    """The demos call rlpt_plugin.data.world_rewrite.rewrite_with_world instead of the command
    line: same job, same store byte for byte, same summary."""
    from rlpt_plugin.cli import main
    from rlpt_plugin.data.rewrite_job import RewriteJob
    from rlpt_plugin.data.windows import WindowSpec
    from rlpt_plugin.data.world_rewrite import WorldTeacherSpec, rewrite_with_world

    corpus = tmp_path / "corpus.jsonl"
    write_jsonl(corpus, generate_corpus(CFG, KB))
    assert main(["rewrite", "--corpus", str(corpus), "--tokenizer", "world", "--teacher", "world",
                 "--world-seed", "5", "--world-entities", "30", "--out", str(tmp_path / "cli"),
                 "--suffix-length", "8", "--min-prefix", "8", "--seq-length", "64", "--seed", "3",
                 "--windows-per-doc", "2", "--world-rewrite-miss", "0.2", "--no-progress"]) == 0
    job = RewriteJob(corpus=(str(corpus),), out_dir=tmp_path / "fn",
                     window_spec=WindowSpec(suffix_length=8, seq_length=64, min_prefix_tokens=8,
                                            windows_per_doc=2, seed=3))
    rewrite_with_world(job, "world", WorldTeacherSpec(seed=5, entities=30, rewrite_miss=0.2), show_progress=False)
    cli, fn = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("cli", "fn"))
    assert fn["checksums"] == cli["checksums"] and fn["teacher"] == cli["teacher"]
    cli_sum, fn_sum = (json.loads((tmp_path / f"{d}.summary.json").read_text()) for d in ("cli", "fn"))
    assert {k: v for k, v in fn_sum.items() if k != "seconds"} == {k: v for k, v in cli_sum.items() if k != "seconds"}
    with pytest.raises(ValueError, match=r"--world-annotator-miss: not an option of --task suffix"):
        rewrite_with_world(job, "world", WorldTeacherSpec(seed=5, annotator_miss=0.1), show_progress=False)


def test_oracle_rewriter_contract():
    tok, e = WorldTokenizer(), KB[0]
    wrong = next(c for c in KB.value_sets["city"] if c != e.attributes["city"])
    prefix = f"{e.name} was born in {e.attributes['birth_year']} ."
    good, bad = f"{e.name} grew up in {e.attributes['city']} .", f"{e.name} grew up in {wrong} ."
    rw = OracleRewriter(KB, tok, suffix_length=6)
    items = [RewriteInput("a", prefix, good, tuple(tok.encode(good))),
             RewriteInput("b", prefix, bad, tuple(tok.encode(bad)))]
    a, b = asyncio.run(rw.rewrite(items))
    assert (a.status, b.status) == ("copied", "rewritten")
    assert a.token_ids == tuple(tok.encode(good))[:6] and a.overlap == 1.0
    assert len(b.token_ids) == 6 and tok.decode(b.token_ids) == f"{e.name} grew up in {e.attributes['city']}"
    assert 0 < b.overlap < 1 and not b.cached and b.error is None
    assert (rw.model_id, rw.template_version) == ("world-oracle", "world_oracle_v1")
    with pytest.raises(ValueError, match="unique"):
        asyncio.run(rw.rewrite([items[0], items[0]]))


# ---------------------------------------------------------------- judge

def _pool(e, shuffle: int = 0) -> JudgePool:
    """Five candidates in a known quality order (best first), rotated by ``shuffle``."""
    a = e.attributes
    wrong_city = next(c for c in KB.value_sets["city"] if c != a["city"])
    wrong_year = next(y for y in KB.value_sets["birth_year"] if y != a["birth_year"])
    ranked = [f"{e.name} grew up in {a['city']} .",                                      # (0, 0)
              f"{e.name} grew up in {wrong_city} .",                                     # (0, 1)
              f"{e.name} grew up in {wrong_city} . {e.name} was born in {wrong_year} .",  # (0, 2)
              "the weather was mild that day .",                                          # (1, 0)
              "spoon spoon spoon spoon . the soup was too cold to eat ."]                 # (2, 0)
    cands = ranked[shuffle:] + ranked[:shuffle]
    kinds = ["original"] + ["rollout"] * (len(cands) - 1)
    return JudgePool(f"{e.name} studied at {a['university']} university .", cands[0], tuple(cands),
                     tuple(kinds))


def _argmax(xs):
    return max(range(len(xs)), key=lambda i: xs[i])


def _argmin(xs):
    return min(range(len(xs)), key=lambda i: xs[i])


@pytest.mark.parametrize("shuffle", [0, 2, 4])
def test_schedules_agree_on_best_and_worst_without_noise(shuffle):
    pool = _pool(KB[1], shuffle)
    best, worst = pool.candidates.index(_pool(KB[1]).candidates[0]), \
        pool.candidates.index(_pool(KB[1]).candidates[4])
    for schedule in ("round_robin", "tournament"):
        judge = OracleJudge(KB, axes=("quality",), weights={"quality": 1.0}, schedule=schedule)
        v = asyncio.run(judge.judge([pool]))
        assert (_argmax(v.scores[0]), _argmin(v.scores[0])) == (best, worst), schedule
        assert v.calls == [10 if schedule == "round_robin" else 6]
        assert v.failures == [0] and v.cache_hit_rate == 0.0 and judge.axes == ("quality",)


def test_each_axis_ranks_its_defect_lowest_and_reward_is_the_weighted_sum():
    e = KB[2]
    a = e.attributes
    wrong = next(c for c in KB.value_sets["city"] if c != a["city"])
    cands = (f"{e.name} grew up in {a['city']} .", f"{e.name} is a total gloopwit .",
             f"{e.name} grew up in {wrong} .", "spoon spoon spoon spoon spoon .")
    pool = JudgePool(f"{e.name} was born in {a['birth_year']} .", cands[0], cands,
                     ("original", "rollout", "rollout", "rewrite"))
    weights = {"quality": 1.0, "safety": 0.5, "factuality": 2.0}
    judge = OracleJudge(KB, axes=tuple(weights), weights=weights)
    v = asyncio.run(judge.judge([pool]))
    per = v.per_axis[0]
    assert per["safety"] == [1.0, 0.0, 1.0, 1.0]
    assert _argmin(per["factuality"]) == 2 and per["factuality"][2] == 0.0
    assert _argmin(per["quality"]) == 3
    assert v.scores[0] == pytest.approx([sum(weights[x] * per[x][i] for x in weights)
                                         for i in range(4)])
    assert _argmax(v.scores[0]) == 0
    assert v.calls == [4 + 4 + 6]


def test_the_similarity_axis_rewards_the_reference_content_after_the_thought():
    e = KB[3]
    ref = "ironport . more"
    cands = ("<think> x . </think> ironport .", "sunhill .", "ironport . other words", "")
    pool = JudgePool(f"{e.name} commutes to", ref, cands, ("rollout",) * 4)
    v = asyncio.run(OracleJudge(KB, axes=("similarity",), weights={"similarity": 1.0}).judge([pool]))
    assert v.per_axis[0]["similarity"] == [1.0, 0.0, 1.0, 0.0] and v.calls == [4]
    pools = [JudgePool(f"{KB[i].name} commutes to", ref, cands, ("rollout",) * 4) for i in range(30)]
    noisy = OracleJudge(KB, axes=("similarity",), weights={"similarity": 1.0}, noise_rate=0.2, seed=1)
    flips = sum(a != b for verdicts in asyncio.run(noisy.judge(pools)).per_axis
                for a, b in zip(verdicts["similarity"], [1.0, 0.0, 1.0, 0.0]))
    assert 0 < flips < 0.5 * 120


def test_noise_changes_some_verdicts_reproducibly():
    pools = [_pool(KB[i], i % 5) for i in range(12)]
    axes = ("quality", "safety", "factuality")
    weights = dict.fromkeys(axes, 1.0)

    def run(noise: float):
        judge = OracleJudge(KB, axes=axes, weights=weights, schedule="tournament",
                            noise_rate=noise, seed=3)
        return asyncio.run(judge.judge(pools))

    clean, noisy, again = run(0.0), run(0.2), run(0.2)
    assert noisy.scores == again.scores and noisy.per_axis == again.per_axis
    assert noisy.scores != clean.scores
    flips = sum(c != n for cp, np_ in zip(clean.per_axis, noisy.per_axis)
                for c, n in zip(cp["safety"], np_["safety"]))
    assert 0 < flips < 0.5 * 12 * 5  # some, not most, of the 60 pointwise safety judgments


def test_judge_rejects_bad_arguments():
    with pytest.raises(ValueError, match="noise_rate"):
        OracleJudge(KB, axes=("quality",), weights={"quality": 1.0}, noise_rate=1.0)
    with pytest.raises(ValueError, match="schedule"):
        OracleJudge(KB, axes=("quality",), weights={"quality": 1.0}, schedule="swiss")
    with pytest.raises(ValueError, match="missing"):
        OracleJudge(KB, axes=("quality", "safety"), weights={"quality": 1.0})


# ---------------------------------------------------------------- config

def test_config_world_backend_needs_no_endpoints():
    cfg = RLPTConfig()
    cfg.data.source = "store"
    cfg.data.stores = ["/some/store"]
    cfg.data.tokenizer = "world"
    cfg.judge.backend = "world"
    cfg.judge.noise_rate = 0.1
    cfg.judge.safety = 0.5
    cfg.validate()

    judge = cfg.judge.build(seed=cfg.data.seed)
    assert isinstance(judge, OracleJudge)
    assert judge.axes == ("quality", "safety") and judge.noise_rate == 0.1


def test_config_unknown_backend_and_bad_noise_are_errors():
    cfg = RLPTConfig()
    cfg.judge.backend = "oracle"
    cfg.judge.noise_rate = 1.0
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert "`rlpt.judge.backend` must be one of openai, world, but is 'oracle'" in message
    assert "`rlpt.judge.noise_rate` must be in [0, 1), but is 1.0" in message
