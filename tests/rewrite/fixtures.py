"""Local test data for the rewrite pipeline: a word-level HF tokenizer and a JSON-lines corpus."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = [f"w{i}" for i in range(200)]


def make_tokenizer_dir(path: Path, words: list[str] = WORDS) -> Path:
    """A word-level Hugging Face fast tokenizer saved to ``path`` (no downloads)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<eos>": 1, **{w: i + 2 for i, w in enumerate(words)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    fast.save_pretrained(str(path))
    return path


def make_corpus(path: Path, num_docs: int, *, seed: int = 0, min_words: int = 30,
                max_words: int = 60, bad_lines: bool = True) -> Path:
    """JSON lines of random word documents, with malformed lines mixed in when asked."""
    rng = random.Random(seed)
    lines: list[bytes] = []
    for i in range(num_docs):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words)))
        lines.append(json.dumps({"id": i, "text": text}).encode())
        if bad_lines and i % 10 == 3:
            lines += [b'{"text": "broken', b'\xff\xfe not utf-8', b'{"text": "   "}', b'{"body": "x"}']
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def make_tiny_teacher(path: Path) -> Path:
    """A randomly initialised 1-layer GPT-2 over the fixture tokenizer, saved locally."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    make_tokenizer_dir(path)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(WORDS) + 2, n_positions=1024,
                        bos_token_id=1, eos_token_id=1)
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(str(path))
    return path


def kill_after_parts(argv: list[str], out: Path, parts_wanted: int = 2) -> int:
    """Run ``rlpt <argv>`` in a child process, SIGKILL it once ``parts_wanted`` part files of
    ``out`` exist (it must still be running then), and return how many parts it had finished."""
    import os
    import signal
    import subprocess
    import sys
    import time

    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "rlpt_plugin.cli", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = out.with_name(out.name + ".parts")
    deadline = time.monotonic() + 120
    while len(list(parts.glob("part-*.npz"))) < parts_wanted and time.monotonic() < deadline:
        assert proc.poll() is None, "the run finished before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return len(list(parts.glob("part-*.npz")))
