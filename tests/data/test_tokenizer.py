"""Tests for rlpt_plugin.data.tokenizer: local HF tokenizers, fingerprints, the spec registry."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rlpt_plugin.data import tokenizer as tokmod
from rlpt_plugin.data.tokenizer import (
    HFTokenizer,
    TokenizerError,
    load_tokenizer,
    register_tokenizer,
)
from rlpt_plugin.types import Tokenizer

WORDS = ["<unk>", "<eos>", "the", "cat", "sat", "on", "mat", ".", "dog"]


def save_tokenizer(directory: Path, words: list[str] = WORDS, *, eos: str | None = "<eos>",
                   lowercase: bool = False) -> Path:
    """A WordLevel/Whitespace tokenizer saved as a Hugging Face folder (no downloads)."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    raw = RawTokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    if lowercase:
        raw.normalizer = normalizers.Lowercase()
    kwargs = {"unk_token": "<unk>"} | ({"eos_token": eos} if eos else {})
    PreTrainedTokenizerFast(tokenizer_object=raw, **kwargs).save_pretrained(str(directory))
    return directory


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_tokenizer(tmp_path_factory.mktemp("toks") / "wordlevel")


def test_roundtrip_and_protocol(tok_dir: Path) -> None:
    tok = HFTokenizer(tok_dir)
    assert isinstance(tok, Tokenizer)
    assert tok.name == "wordlevel"
    assert tok.vocab_size == len(WORDS)
    ids = tok.encode("the cat sat on the mat .")
    assert ids == [2, 3, 4, 5, 2, 6, 7]  # no special tokens added
    assert tok.decode(ids) == "the cat sat on the mat ."
    assert tok.encode("the zebra") == [2, 0]
    # decode skips nothing: the eos token survives.
    assert tok.decode([3, tok.eod_id]) == "cat <eos>"


def test_long_text_encodes_without_truncation(tok_dir: Path) -> None:
    tok = HFTokenizer(tok_dir)
    assert len(tok.encode("dog " * 5000)) == 5000


def test_eod_id_default_and_override(tok_dir: Path) -> None:
    assert HFTokenizer(tok_dir).eod_id == 1
    assert HFTokenizer(tok_dir, eod_token=".").eod_id == 7
    with pytest.raises(TokenizerError, match="`eod_token` must be a token"):
        HFTokenizer(tok_dir, eod_token="<missing>")


def test_missing_eos_is_an_error(tmp_path: Path) -> None:
    directory = save_tokenizer(tmp_path / "no_eos", eos=None)
    with pytest.raises(TokenizerError, match="has no eos token"):
        HFTokenizer(directory)
    assert HFTokenizer(directory, eod_token="<eos>").eod_id == 1


def test_fingerprint_same_for_copy_different_for_changes(tok_dir: Path, tmp_path: Path) -> None:
    base = HFTokenizer(tok_dir)
    assert len(base.fingerprint) == 64
    copy = HFTokenizer(shutil.copytree(tok_dir, tmp_path / "elsewhere" / "copy"))
    assert copy.name == "copy" and copy.fingerprint == base.fingerprint
    # Using the tokenizer does not change it (transformers mutates backend truncation state).
    base.encode("the cat " * 10)
    base._tok("the cat sat", truncation=True, max_length=2)  # sets backend truncation state
    assert tokmod._fingerprint(base._tok, base.eod_id) == base.fingerprint
    assert HFTokenizer(tok_dir).fingerprint == base.fingerprint

    changed_vocab = HFTokenizer(save_tokenizer(tmp_path / "v2", WORDS[:-1] + ["bird"]))
    swapped_ids = HFTokenizer(save_tokenizer(tmp_path / "v3", WORDS[:2] + WORDS[3:4] + WORDS[2:3]
                                             + WORDS[4:]))
    lowercased = HFTokenizer(save_tokenizer(tmp_path / "v4", lowercase=True))
    other_eod = HFTokenizer(tok_dir, eod_token=".")
    prints = {base.fingerprint, changed_vocab.fingerprint, swapped_ids.fingerprint,
              lowercased.fingerprint, other_eod.fingerprint}
    assert len(prints) == 5


def test_hf_tokenizer_bad_directories(tmp_path: Path) -> None:
    with pytest.raises(TokenizerError, match="does not exist"):
        HFTokenizer(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="cannot load a Hugging Face tokenizer"):
        HFTokenizer(tmp_path / "empty")


def test_load_tokenizer_directory(tok_dir: Path) -> None:
    tok = load_tokenizer(str(tok_dir))
    assert isinstance(tok, HFTokenizer) and tok.encode("cat") == [3]


def test_load_tokenizer_errors(tmp_path: Path) -> None:
    # "world" needs no prior import: its providing module registers it on first use.
    world = load_tokenizer("world")
    assert world.name == "world" and world.decode(world.encode("born in")) == "born in"
    with pytest.raises(ValueError, match=r"'gpt2' is neither a local directory.*world"):
        load_tokenizer("gpt2")
    with pytest.raises(ValueError, match="non-empty string"):
        load_tokenizer("")


class _FakeTokenizer:
    name = "fake"
    fingerprint = "f" * 64
    vocab_size = 3
    eod_id = 2

    def encode(self, text: str) -> list[int]:
        return [0] * len(text)

    def decode(self, ids: list[int]) -> str:
        return "a" * len(ids)


def test_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokmod, "_REGISTRY", {})
    register_tokenizer("world", _FakeTokenizer)
    assert load_tokenizer("world").name == "fake"  # a registered name beats the reservation
    with pytest.raises(TokenizerError, match="already registered"):
        register_tokenizer("world", _FakeTokenizer)
    register_tokenizer("world", lambda: "not a tokenizer", replace=True)  # type: ignore[arg-type]
    with pytest.raises(TokenizerError, match="lacks the Tokenizer API"):
        load_tokenizer("world")
    with pytest.raises(TokenizerError, match="must be callable"):
        register_tokenizer("x", 3)  # type: ignore[arg-type]
    assert tokmod.registered_tokenizers() == ["world"]
