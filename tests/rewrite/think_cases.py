"""Crafted teacher answers for the think task: each chunk's answer is chosen by a hash of its
text, so the expected outcome of every chunk is known (``expected_status``)."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tests.rewrite.fixtures import WORDS

THINK_WORDS = [*WORDS, "<think>", "</think>"]
REFUSAL = "I'm sorry, but I can't help with that."
# outcome by hash % 8: three good variants, then one bad answer per reason
OUTCOMES = ("augmented", "thoughts_changed_text", "no_thoughts", "augmented", "unbalanced_tags",
            "refused", "empty_thought", "augmented")


def chunk_text(body: dict[str, Any]) -> str:
    user = [m["content"] for m in body["messages"] if m["role"] == "user"][-1]
    return user.split("<<<\n", 1)[1].split("\n>>>", 1)[0]


def kind(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) % 8


def expected_status(text: str) -> str:
    return OUTCOMES[kind(text)]


def answer(text: str) -> str:
    words = text.split(" ")
    k = kind(text)
    if k == 0:  # a thought after every third word
        out = []
        for i, w in enumerate(words):
            out.append(w)
            if i % 3 == 2 and i + 1 < len(words):
                out.append(f"<think> w{i} w{i + 1} </think>")
        return " ".join(out)
    if k == 1:  # a word dropped
        return " ".join([words[0], "<think> w1 </think>", *words[2:]])
    if k == 2:
        return text
    if k == 3:  # tag variants, a thought first and last, a trailing newline
        return f"<Thinking> w5 </thinking> {' '.join(words[:2])} <thought>w6</thought> " \
               f"{' '.join(words[2:])} <reasoning> w7 w8 </reasoning>\n"
    if k == 4:
        return f"{words[0]} <think> w3 {' '.join(words[1:])}"
    if k == 5:
        return REFUSAL
    if k == 6:
        return f"{words[0]} <think> </think> {' '.join(words[1:])}"
    return f"{' '.join(words[:1])} <think>w9 w9</think>\n{' '.join(words[1:])}"


def responder(body: dict[str, Any]) -> str:
    return answer(chunk_text(body))


def request_key(body: dict[str, Any]) -> str:
    return json.dumps(body.get("messages"), sort_keys=True)


def small_think_store(root: Any, *, num_docs: int = 24, seed: int = 0) -> tuple[Any, Any]:
    """(store, tokenizer dir): ``rlpt rewrite --task think`` over a corpus of 100 words against the
    loopback server, so every id fits the tiny recipe's vocabulary of 128 (tags: ids 102, 103)."""
    import random
    from pathlib import Path

    from rlpt_plugin.cli import main
    from tests.rewrite.fixtures import make_tokenizer_dir
    from tests.teacher.loopback_server import LoopbackServer

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(100)]
    tok = make_tokenizer_dir(root / "tok", [*words, "<think>", "</think>"])
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(20, 40))) for _ in range(num_docs)]
    corpus = root / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    store = root / "think_store"
    with LoopbackServer(responder=responder) as server:
        code = main(["rewrite", "--task", "think", "--corpus", str(corpus), "--tokenizer", str(tok), "--out",
                     str(store), "--endpoint", server.base_url, "--model", "loopback-teacher",
                     "--chunk-length", "10", "--min-chunk", "4", "--seq-length", "24", "--no-progress"])
    assert code == 0
    return store, tok
