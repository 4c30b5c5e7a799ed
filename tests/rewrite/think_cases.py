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
