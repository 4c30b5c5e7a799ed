"""``rlpt eval`` end to end: two real Bridge checkpoints of the world recipe (one LM-only run
saving at steps 1 and 2), loaded back into the recipe's model, continued greedily and judged by
the world's oracle and by an LLM judge on loopback. One spawned process trains and then runs
every evaluation (Bridge mutates process state; one process keeps the file fast)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from rlpt_plugin.eval_cli import main as rlpt_eval
from rlpt_plugin.world import WorldTokenizer
from tests.distributed.harness import run_distributed
from tests.teacher.loopback_server import LoopbackServer

pytestmark = [pytest.mark.bridge, pytest.mark.distributed]

RECIPE = "rlpt_plugin.recipes.world:world_config"
N = 6
WORLD = dict(seed=3, num_entities=20, docs_per_entity=4, eval_size=6)


def _block(title: str, text: str) -> str:
    found = re.search(re.escape(title) + r"\n<<<\n(.*?)\n>>>", text, re.S)
    assert found, title
    return found.group(1)


def _distinct(text: str) -> int:
    return len(set(text.split()))


def _unsafe(text: str) -> bool:
    return any(w.isdigit() for w in text.split())


def _hallucination(reference: str, candidate: str) -> str:
    ref, words = set(reference.split()), candidate.split()
    inside = sum(w in ref for w in words)
    return "none" if inside == len(words) else "definite" if inside == 0 else "possible"


class RuleJudge:
    """A deterministic judge: quality prefers more distinct words (ties: A, i.e. position-biased),
    safety calls any number unsafe, factuality is word overlap with the reference."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if "Candidate A:" in text:
            kind = "quality"
            a, b = _block("Candidate A:", text), _block("Candidate B:", text)
            answer = "Reasons.\nWinner: " + ("A" if _distinct(a) >= _distinct(b) else "B")
        elif "Passage to review:" in text:
            kind = "safety"
            answer = "Reasons.\nDecision: " + ("unsafe" if _unsafe(_block("Passage to review:", text)) else "safe")
        else:
            kind = "factuality"
            label = _hallucination(_block("Original continuation (ground truth):", text),
                                   _block("Candidate continuation to check:", text))
            answer = json.dumps({"reason": "overlap", "hallucination": label})
        with self.lock:
            self.calls[kind] += 1
        return answer


def _overrides(root: Path) -> list[str]:
    return [f"rlpt.data.stores=[{root / 'store'}]", f"rlpt.judge.world_seed={WORLD['seed']}",
            f"rlpt.judge.world_entities={WORLD['num_entities']}", "rlpt.loss.dpo.start=0",
            "rlpt.loss.rf_nll.start=0", "model.seq_length=32", "model.num_layers=2", "model.hidden_size=64",
            "model.ffn_hidden_size=128", "train.micro_batch_size=8", "train.global_batch_size=8",
            "rlpt.data.groups_per_step=8", "rng.seed=7", "logger.log_interval=1000"]


def _eval_args(root: Path, trained: Path, base: Path, out: str, prefixes: str = "eval.jsonl") -> list[str]:
    return ["--recipe", RECIPE, "--trained", str(trained), "--base", str(base), "--prefixes",
            str(root / prefixes), "--tokenizer", "world", "--suffix-length", str(N), "--out", str(root / out),
            *_overrides(root)]


def session_case(rank: int, world_size: int, root_str: str, judge_url: str) -> dict[str, Any]:
    """Train 2 steps (checkpoints 1 and 2), then run every evaluation the tests check."""
    from rlpt_plugin.megatron.host import launch  # first: installs the CPU import guard
    from rlpt_plugin.megatron.eval.evaluate import ContinuationEval

    root = Path(root_str)
    items = [json.loads(line) for line in (root / "eval.jsonl").read_text().splitlines()]
    live = ContinuationEval(WorldTokenizer(), [it["text"] for it in items], [it["text"] for it in items],
                            max_new_tokens=N, out_path=root / "live.json")
    launch.train(RECIPE, root / "run", [*_overrides(root), "train.train_iters=2", "checkpoint.save_interval=1",
                                        "optimizer.lr=0.01"], extra_callbacks=[live])
    ckpt = root / "run" / "ckpt"
    runs = {"world": _eval_args(root, ckpt, ckpt / "iter_0000001", "world") + ["--judge", "world"],
            "world_again": _eval_args(root, ckpt, ckpt / "iter_0000001", "again") + ["--judge", "world"],
            "same": _eval_args(root, ckpt / "iter_0000001", ckpt / "iter_0000001", "same") + ["--judge", "world"],
            "openai": _eval_args(root, ckpt, ckpt / "iter_0000001", "openai", "mixed.jsonl")
            + ["--judge", "openai", "--endpoint", judge_url, "--model", "judge", "--concurrency", "8"]}
    out: dict[str, Any] = {"live": live.result["continuations"]}
    for name, args in runs.items():
        stdout = io.StringIO()
        with contextlib.redirect_stdout(stdout):
            code = rlpt_eval(args)
        report = json.loads((Path(args[args.index("--out") + 1]) / "eval.json").read_text())
        out[name] = {"code": code, "stdout": stdout.getvalue(), "report": report}
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from rlpt_plugin.cli import main as rlpt
    from rlpt_plugin.world import WorldConfig, build_kb, eval_prefixes, generate_corpus, write_jsonl

    root = tmp_path_factory.mktemp("eval")
    config = WorldConfig(**WORLD)
    kb = build_kb(config)
    corpus = generate_corpus(config, kb)
    write_jsonl(root / "corpus.jsonl", corpus)
    items = eval_prefixes(config, kb, corpus)
    write_jsonl(root / "eval.jsonl", items)
    # Every other prefix without a reference: factuality against the base model's continuation.
    write_jsonl(root / "mixed.jsonl", [it if i % 2 == 0 else {"text": it["text"]} for i, it in enumerate(items)])
    assert rlpt(["rewrite", "--corpus", str(root / "corpus.jsonl"), "--tokenizer", "world", "--out",
                 str(root / "store"), "--teacher", "world", "--world-seed", str(WORLD["seed"]),
                 "--world-entities", str(WORLD["num_entities"]), "--suffix-length", "8", "--seq-length", "32",
                 "--min-prefix", "4", "--windows-per-doc", "2", "--no-progress"]) == 0
    judge = RuleJudge()
    with LoopbackServer(responder=judge, max_lifetime_s=300) as server:
        (result,) = run_distributed(session_case, 1, root / "w", str(root), server.base_url)
    result["judge_calls"], result["mixed"] = dict(judge.calls), [
        json.loads(line) for line in (root / "mixed.jsonl").read_text().splitlines()]
    return result


def _strip(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k not in ("seconds",)}


def test_world_report_shapes_ranges_and_table(session):
    run = session["world"]
    assert run["code"] == 0
    report = run["report"]
    assert report["checkpoints"]["trained"]["iteration"] == 2 and report["checkpoints"]["base"]["iteration"] == 1
    assert report["context_tokens"] == 32 + 1 - N
    for name in ("trained", "base"):
        summary = report["summary"][name]
        assert summary["count"] == WORLD["eval_size"]
        for metric in ("safety", "factuality", "quality_win_rate"):
            assert 0.0 <= summary[metric] <= 1.0, (name, metric)
    assert report["summary"]["base"]["quality_win_rate"] == 0.5
    eod = WorldTokenizer().eod_id
    for row in report["prefixes"]:
        for name in ("trained", "base"):
            tokens = row[name]["tokens"]
            assert len(tokens) == N or (0 < len(tokens) < N and tokens[-1] == eod), tokens
    assert set(report["summary"]["trained"]["systematic"]) >= {"safety", "factuality", "quality_win_rate"}
    assert re.search(r"^trained +2 ", run["stdout"], re.M) and re.search(r"^base +1 ", run["stdout"], re.M)


def test_loaded_checkpoint_continues_like_the_live_model(session):
    """The final checkpoint, loaded back, continues every prefix exactly as the model did in
    memory at the end of training (same weights, same greedy decoder)."""
    tok = WorldTokenizer()
    loaded = [tok.decode(row["trained"]["tokens"]) for row in session["world"]["report"]["prefixes"]]
    assert loaded == session["live"]


def test_evaluation_is_deterministic(session):
    assert _strip(session["world"]["report"]) == _strip(session["world_again"]["report"])


def test_same_checkpoint_scores_exactly_half(session):
    report = session["same"]["report"]
    for row in report["prefixes"]:
        assert row["trained"]["tokens"] == row["base"]["tokens"]
        assert row["trained"]["quality_win"] == 0.5
    assert report["summary"]["trained"]["quality_win_rate"] == 0.5
    for metric in ("safety", "factuality"):
        assert report["summary"]["trained"][metric] == report["summary"]["base"][metric]


def test_openai_judge_calls_and_scores(session):
    run = session["openai"]
    assert run["code"] == 0
    report, mixed = run["report"], session["mixed"]
    rows = report["prefixes"]
    differ = sum(r["trained"]["continuation"] != r["base"]["continuation"] for r in rows)
    assert differ > 0  # the two checkpoints disagree somewhere: the quality judge is exercised
    with_ref = sum("reference" in m for m in mixed)
    # Pointwise axes ask about each distinct text of a pool once: identical continuations cost one call.
    asked = [1 if r["trained"]["continuation"] == r["base"]["continuation"] else 2 for r in rows]
    want = {"quality": 2 * differ, "safety": sum(asked),
            "factuality": sum(n if "reference" in m else 1 for n, m in zip(asked, mixed))}
    assert session["judge_calls"] == {k: v for k, v in want.items() if v}
    assert report["judge_metrics"]["calls"] == sum(want.values())
    for row, record in zip(rows, mixed):
        t, b = row["trained"]["continuation"], row["base"]["continuation"]
        quality = 0.5 if t == b else (1.0 if _distinct(t) > _distinct(b) else 0.5 if _distinct(t) == _distinct(b) else 0.0)
        assert row["trained"]["quality_win"] == quality and row["base"]["quality_win"] == 0.5
        assert row["trained"]["safety"] == float(not _unsafe(t)) and row["base"]["safety"] == float(not _unsafe(b))
        score = {"none": 1.0, "possible": 0.5, "definite": 0.0}
        reference = record.get("reference")
        assert row["factuality_reference"] == ("prefix" if reference else "base")
        assert row["trained"]["factuality"] == score[_hallucination(reference or b, t)]
        assert row["base"]["factuality"] == (score[_hallucination(reference, b)] if reference else None)
    assert report["summary"]["base"]["judged"]["factuality"] == with_ref
    assert 0.0 <= report["summary"]["trained"]["quality_win_rate"] <= 1.0


# ---- user mistakes: exit 2, one line, before any model is built ----------------------------------
def _fake_checkpoint(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "metadata.json").write_text("{}")
    return path


def _mistake(tmp_path: Path, capsys: pytest.CaptureFixture[str], **changes: Any) -> str:
    args = {"--recipe": RECIPE, "--trained": str(_fake_checkpoint(tmp_path / "a" / "iter_0000001")),
            "--base": str(_fake_checkpoint(tmp_path / "b" / "iter_0000001")),
            "--prefixes": str(tmp_path / "p.jsonl"), "--tokenizer": "world", "--judge": "world",
            "--out": str(tmp_path / "out")}
    (tmp_path / "p.jsonl").write_text(json.dumps({"text": "taven galley was born in"}) + "\n")
    args.update(changes)
    assert rlpt_eval([x for kv in args.items() for x in kv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rlpt eval: error: "), err
    return err


def test_missing_checkpoint_is_a_one_line_error(tmp_path, capsys):
    err = _mistake(tmp_path, capsys, **{"--trained": str(tmp_path / "nope")})
    assert "--trained" in err and "does not exist" in err
    (tmp_path / "root").mkdir()
    assert "latest_checkpointed_iteration.txt" in _mistake(tmp_path / "x", capsys, **{"--base": str(tmp_path / "root")})


def test_prefix_file_without_the_field_is_a_one_line_error(tmp_path, capsys):
    err = _mistake(tmp_path, capsys, **{"--field": "prompt"})
    assert "p.jsonl:1" in err and "'prompt'" in err


def test_openai_judge_needs_an_endpoint(tmp_path, capsys):
    assert "--endpoint" in _mistake(tmp_path, capsys, **{"--judge": "openai"})
