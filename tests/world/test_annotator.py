"""``rlpt rewrite --task think --teacher world``: the world's annotator through the think task."""

from __future__ import annotations

import json

from rlpt_plugin.world import WorldConfig, WorldTokenizer, build_kb, generate_corpus, vocab, write_jsonl
from rlpt_plugin.world.reasoning import ReasoningConfig, employer_sites, reasoning_corpus, strip_thoughts

CFG = WorldConfig(seed=4, num_entities=30, docs_per_entity=2, eval_size=4)
KB = build_kb(CFG)
CORPUS = reasoning_corpus(CFG, ReasoningConfig(eval_size=1, company_docs=2), KB, generate_corpus(CFG, KB))


def _rewrite(tmp_path, name: str, *extra: str) -> tuple[int, dict]:
    from rlpt_plugin.cli import main

    corpus = tmp_path / "corpus.jsonl"
    if not corpus.exists():
        write_jsonl(corpus, CORPUS)
    out = tmp_path / name
    rc = main(["rewrite", "--task", "think", "--corpus", str(corpus), "--tokenizer", "world-reasoning", "--teacher", "world",
               "--world-seed", "4", "--world-entities", "30", "--out", str(out), "--chunk-length", "96",
               "--min-chunk", "4", "--seq-length", "128", "--no-progress", *extra])
    manifest = json.loads((out / "manifest.json").read_text()) if rc == 0 else {}
    return rc, manifest


def test_the_exact_annotator_explains_every_two_hop_sentence_and_changes_no_id(tmp_path):
    from rlpt_plugin.megatron.data.think_store import ThinkStore

    rc, manifest = _rewrite(tmp_path, "exact", "--world-annotator-miss", "0", "--world-annotator-error", "0")
    assert rc == 0 and manifest["teacher"]["model_id"] == "world-oracle"
    hops = [d for d in CORPUS if d["two_hop"] is not None]
    assert manifest["outcomes"]["augmented"] == len(hops) > 0  # one chunk per document (chunk >= doc)
    assert manifest["outcomes"]["no_thoughts"] == len(CORPUS) - len(hops)
    tok, sites = WorldTokenizer(reasoning=True), employer_sites(CFG)
    store = ThinkStore(tmp_path / "exact", expect_tokenizer=tok.fingerprint)
    for i in range(len(store)):
        chunk = store[i]
        doc = CORPUS[chunk.doc_index]
        text = tok.decode(chunk.tokens.tolist())
        assert tok.decode(chunk.original.tolist()) == doc["text"] == strip_thoughts(text)
        employer = KB[doc["entity"]].attributes["employer"]
        thought = tok.decode(chunk.tokens[chunk.mask == 1].tolist()).split()
        assert thought[0] == vocab.THINK_OPEN and thought[-1] == vocab.THINK_CLOSE
        assert employer in thought and sites[employer] in thought


def test_the_honest_annotator_misses_and_errs_at_its_rates_and_bad_flags_are_errors(tmp_path, capsys):
    from rlpt_plugin.megatron.data.think_store import ThinkStore

    rc, manifest = _rewrite(tmp_path, "missing", "--world-annotator-miss", "1")
    assert rc == 0 and manifest["outcomes"].get("augmented", 0) == 0
    rc, manifest = _rewrite(tmp_path, "wrong", "--world-annotator-miss", "0", "--world-annotator-error", "1")
    store, tok = ThinkStore(tmp_path / "wrong"), WorldTokenizer(reasoning=True)
    for i in range(len(store)):
        doc = CORPUS[store[i].doc_index]
        thought = tok.decode(store[i].tokens[store[i].mask == 1].tolist()).split()
        assert KB[doc["entity"]].attributes["employer"] not in thought  # wrong step, same text
    rc, _ = _rewrite(tmp_path, "default")
    assert rc == 0
    assert main_error(tmp_path, capsys, "--world-knowledge", "0.5") == \
        "--world-knowledge: not an option of --task think with --teacher world"


def main_error(tmp_path, capsys, *extra: str) -> str:
    capsys.readouterr()
    rc, _ = _rewrite(tmp_path, "bad", *extra)
    assert rc == 2
    return capsys.readouterr().err.strip().split("error: ", 1)[1]
