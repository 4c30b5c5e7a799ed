"""SentencePiece tokenizer folders (Llama-2 style), made offline: a tiny model is trained here
from generated sentences, saved as ``tokenizer.model`` with and without ``tokenizer_config.json``,
and loaded through the plugin's own loader."""

from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import pytest

from rlpt_plugin.data.tokenizer import HFTokenizer, SentencePieceTokenizer, TokenizerError, load_tokenizer
from rlpt_plugin.types import Tokenizer

SYLLABLES = ["ka", "lo", "mi", "ra", "tu", "ne", "so", "vi", "pe", "da", "zo", "ri"]
# Llama-2's tokenizer_config.json, reduced to what decides the tokenization.
LLAMA_CONFIG = {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>",
                "unk_token": "<unk>", "add_bos_token": True, "add_eos_token": False, "legacy": False}


def sentences(seed: int, count: int = 400) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(SYLLABLES) for _ in range(rng.randint(1, 3))) for _ in range(80)]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))) + "." for _ in range(count)]


def train_model(seed: int) -> bytes:
    import sentencepiece

    buf = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(sentences(seed)), model_writer=buf,
                                             vocab_size=64, model_type="unigram", minloglevel=2)
    return buf.getvalue()


def save_dir(path: Path, model: bytes, config: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "tokenizer.model").write_bytes(model)
    if config is not None:
        (path / "tokenizer_config.json").write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def model() -> bytes:
    return train_model(seed=0)


@pytest.mark.parametrize("with_config", [False, True], ids=["bare", "llama_config"])
def test_sentencepiece_folder_loads_round_trips_and_has_a_stable_fingerprint(model, tmp_path, with_config):
    config = LLAMA_CONFIG if with_config else None
    tok = load_tokenizer(str(save_dir(tmp_path / "llama2-tiny", model, config)))
    assert isinstance(tok, Tokenizer)
    # Read with SentencePiece either way (tokenizer.py: transformers' conversion of such a folder
    # is not stable across its versions).
    assert isinstance(tok, SentencePieceTokenizer)
    assert tok.name == "llama2-tiny" and tok.vocab_size == 64
    assert tok.decode([tok.eod_id]) in ("</s>", "")  # SentencePiece decodes control pieces to ""
    text = " ".join(sentences(seed=7, count=3))  # unseen sentences over the same syllables
    ids = tok.encode(text)
    assert 0 < len(ids) < len(text) and all(0 <= i < tok.vocab_size for i in ids)
    assert tok.eod_id not in ids  # no BOS / EOS added
    assert tok.decode(ids) == text
    # Same meaning, same fingerprint: reloading and a copy elsewhere agree.
    again = load_tokenizer(str(tmp_path / "llama2-tiny"))
    copy = load_tokenizer(str(shutil.copytree(tmp_path / "llama2-tiny", tmp_path / "elsewhere" / "copy")))
    assert len(tok.fingerprint) == 64 and tok.fingerprint == again.fingerprint == copy.fingerprint
    other = load_tokenizer(str(save_dir(tmp_path / "other", train_model(seed=1), config)))
    assert other.fingerprint != tok.fingerprint


def test_a_config_beside_the_model_names_the_eod_token_and_changes_no_id(model, tmp_path):
    bare = load_tokenizer(str(save_dir(tmp_path / "bare", model)))
    llama = load_tokenizer(str(save_dir(tmp_path / "llama", model, LLAMA_CONFIG)))
    text = " ".join(sentences(seed=3, count=5))
    assert bare.encode(text) == llama.encode(text) and bare.eod_id == llama.eod_id == 2
    assert bare.fingerprint == llama.fingerprint  # the same model, the same meaning
    bos_ends = load_tokenizer(str(save_dir(tmp_path / "bos", model, {**LLAMA_CONFIG, "eos_token": {"content": "<s>"}})))
    assert bos_ends.eod_id == 1 and bos_ends.fingerprint != bare.fingerprint


def test_a_config_that_adds_tokens_the_model_lacks_is_refused(model, tmp_path):
    extra = {**LLAMA_CONFIG, "added_tokens_decoder": {"64": {"content": "<pad>", "special": True}}}
    with pytest.raises(TokenizerError, match=r"adds the token '<pad>' at id 64.*tokenizer\.json"):
        load_tokenizer(str(save_dir(tmp_path / "extra", model, extra)))
    moved = {**LLAMA_CONFIG, "added_tokens_decoder": {"5": {"content": "</s>"}}}
    with pytest.raises(TokenizerError, match="adds the token '</s>' at id 5"):
        load_tokenizer(str(save_dir(tmp_path / "moved", model, moved)))
    special = {**LLAMA_CONFIG, "additional_special_tokens": ["<tool>"]}
    with pytest.raises(TokenizerError, match="adds the token '<tool>'"):
        load_tokenizer(str(save_dir(tmp_path / "special", model, special)))
    # The model's own control pieces are not additions.
    ok = {**LLAMA_CONFIG, "added_tokens_decoder": {"0": {"content": "<unk>"}, "1": {"content": "<s>"},
                                                   "2": {"content": "</s>"}}}
    assert load_tokenizer(str(save_dir(tmp_path / "ok", model, ok))).eod_id == 2


def test_a_folder_with_tokenizer_json_is_read_by_transformers(model, tmp_path):
    """A fast tokenizer saved by transformers says itself how it encodes: AutoTokenizer reads it."""
    from tokenizers import Tokenizer as RawTokenizer, models, pre_tokenizers

    directory = tmp_path / "fast"
    directory.mkdir()
    raw = RawTokenizer(models.WordLevel({"<unk>": 0, "</s>": 1, "a": 2, "b": 3}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    raw.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "</s>", "unk_token": "<unk>"}))
    (directory / "tokenizer.model").write_bytes(model)  # beside it, not used
    tok = load_tokenizer(str(directory))
    assert isinstance(tok, HFTokenizer) and tok.encode("a b a") == [2, 3, 2] and tok.eod_id == 1


def test_sentencepiece_eod_override_and_errors(model, tmp_path):
    directory = save_dir(tmp_path / "sp", model)
    assert SentencePieceTokenizer(directory).eod_id == 2
    assert SentencePieceTokenizer(directory, eod_token="<s>").eod_id == 1
    with pytest.raises(TokenizerError, match="`eod_token` must be a piece of its vocabulary"):
        SentencePieceTokenizer(directory, eod_token="<missing>")
    with pytest.raises(TokenizerError, match="has no tokenizer.model"):
        SentencePieceTokenizer(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="cannot load the SentencePiece model"):
        load_tokenizer(str(broken))
