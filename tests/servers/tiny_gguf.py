"""A tiny random-weight llama-architecture GGUF model, built offline in about a second.

Nothing is downloaded: the weights are drawn from a seeded NumPy generator and the vocabulary is
character-level, so every prompt of the project tokenizes without unknown tokens:

* ids 0-2: ``<unk>``, ``<s>``, ``</s>`` (unknown / control);
* ids 3-258: the 256 byte tokens ``<0x00>`` ... ``<0xFF>`` (SentencePiece byte fallback: any
  character outside the vocabulary, newlines and non-ASCII text included, becomes its UTF-8
  bytes);
* then ``▁`` (the SentencePiece word boundary, i.e. a space) and the printable ASCII
  characters ``!`` ... ``~``, one token each.

``tokenizer.ggml.model = "llama"`` selects llama.cpp's SentencePiece tokenizer. The chat
template (``tokenizer.chat_template``, rendered by llama-cpp-python's Jinja formatter) writes
``<|role|>`` headers and leaves a final assistant message open, so a primed answer
(``assistant_prefix``) is continued rather than closed.

:func:`build` writes the file under ``directory`` with a name that hashes the build recipe, so
a changed recipe never reuses a stale file and an unchanged one is built once per checkout.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

RECIPE = {
    "version": 1,
    "seed": 1234,
    "n_embd": 64,
    "n_layer": 2,
    "n_head": 4,
    "n_head_kv": 4,
    "n_ff": 128,
    "n_ctx": 8192,
    "init_std": 0.02,
}

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "<|{{ m['role'] }}|>\n{{ m['content'] }}"
    "{% if not (loop.last and m['role'] == 'assistant') %}</s>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}<|assistant|>\n{% endif %}"
)

# gguf token types (llama.cpp's llama_token_type): normal, unknown, control, byte.
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def vocabulary() -> tuple[list[str], list[float], list[int]]:
    """(tokens, scores, token types) of the character-level SentencePiece vocabulary."""
    tokens = ["<unk>", "<s>", "</s>"]
    types = [_UNKNOWN, _CONTROL, _CONTROL]
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [_BYTE] * 256
    chars = ["\u2581"] + [chr(c) for c in range(0x21, 0x7F)]
    tokens += chars
    types += [_NORMAL] * len(chars)
    scores = [0.0] * 259 + [-float(i) for i in range(len(chars))]
    return tokens, scores, types


def build(directory: str | os.PathLike[str]) -> Path:
    """The model file under ``directory`` (built when missing; an atomic rename publishes it)."""
    import gguf  # the writer from llama.cpp's project on PyPI; needed only to build

    digest = hashlib.sha256(json.dumps([RECIPE, CHAT_TEMPLATE], sort_keys=True).encode()).hexdigest()[:12]
    out = Path(directory) / f"tiny-llama-{digest}.gguf"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    r = RECIPE
    tokens, scores, types = vocabulary()
    n_vocab, d, ff = len(tokens), r["n_embd"], r["n_ff"]
    d_kv = d // r["n_head"] * r["n_head_kv"]
    rng = np.random.default_rng(r["seed"])

    def w(*shape: int) -> np.ndarray:
        # NumPy (rows, cols) = (outputs, inputs): gguf stores it as ne = [inputs, outputs].
        return (rng.standard_normal(shape) * r["init_std"]).astype(np.float32)

    tmp = out.with_suffix(f".tmp{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    writer.add_name("rlpt-tiny-random-llama")
    writer.add_context_length(r["n_ctx"])
    writer.add_embedding_length(d)
    writer.add_block_count(r["n_layer"])
    writer.add_feed_forward_length(ff)
    writer.add_head_count(r["n_head"])
    writer.add_head_count_kv(r["n_head_kv"])
    writer.add_rope_dimension_count(d // r["n_head"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(0)  # all F32
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(True)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    writer.add_tensor("token_embd.weight", w(n_vocab, d))
    writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    writer.add_tensor("output.weight", w(n_vocab, d))
    for i in range(r["n_layer"]):
        p = f"blk.{i}."
        writer.add_tensor(p + "attn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "attn_q.weight", w(d, d))
        writer.add_tensor(p + "attn_k.weight", w(d_kv, d))
        writer.add_tensor(p + "attn_v.weight", w(d_kv, d))
        writer.add_tensor(p + "attn_output.weight", w(d, d))
        writer.add_tensor(p + "ffn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(p + "ffn_gate.weight", w(ff, d))
        writer.add_tensor(p + "ffn_up.weight", w(ff, d))
        writer.add_tensor(p + "ffn_down.weight", w(d, ff))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, out)
    return out


if __name__ == "__main__":
    import sys

    print(build(sys.argv[1] if len(sys.argv) > 1 else "build/servers"))
