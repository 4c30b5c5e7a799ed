"""Tokenizers implementing :class:`rlpt_plugin.types.Tokenizer`, and how specs name them.

:func:`load_tokenizer` turns a spec into a tokenizer: a local directory holding a Hugging Face
tokenizer, or a name registered with :func:`register_tokenizer` (the synthetic world registers
"world" itself). Nothing is ever downloaded: Hugging Face loading is ``local_files_only``.

A directory is read the way its files say it is meant to be read:

* a SentencePiece ``tokenizer.model`` and no ``tokenizer.json`` (Meta's original Llama-2
  release; Llama-2 style folders with only ``tokenizer_config.json`` beside the model): with
  ``sentencepiece`` itself (:class:`SentencePieceTokenizer`), the library that model was made
  for. transformers would convert the model into a fast tokenizer instead, and the conversion
  is not stable across its versions (transformers 5 gives other ids than SentencePiece and
  transformers 4 for the same folder), so the same folder would mean different token streams
  on the two tested stacks. The config still says which token ends a document (``eos_token``);
  tokens it adds beyond the model's pieces cannot be reproduced this way and are an error;
* any other Hugging Face folder (``tokenizer.json``, or ``tokenizer_config.json`` /
  ``config.json`` without a SentencePiece model): with transformers' ``AutoTokenizer``
  (:class:`HFTokenizer`).

The fingerprint identifies what the token ids *mean*, not where the files live: two copies of
a tokenizer in different folders share it, any vocabulary or normalisation change alters it.
A stored dataset opened with a tokenizer of another fingerprint is therefore an error.
"""

from __future__ import annotations

import importlib

import hashlib
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rlpt_plugin.types import Tokenizer

#: Keys of a fast tokenizer's JSON that are call-time state or file-format metadata, not
#: meaning: transformers mutates truncation/padding on the backend while encoding.
_VOLATILE_KEYS = ("truncation", "padding", "version")


class TokenizerError(ValueError):
    """A tokenizer spec or tokenizer directory that cannot be used."""


def _fingerprint(tokenizer: Any, eod_id: int) -> str:
    """sha256 over class name, sorted vocabulary, backend JSON (normaliser etc.) and eod id."""
    digest = hashlib.sha256()
    digest.update(type(tokenizer).__name__.encode())
    vocab = sorted(tokenizer.get_vocab().items())
    digest.update(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        for key in _VOLATILE_KEYS:
            state.pop(key, None)
        digest.update(json.dumps(state, sort_keys=True, ensure_ascii=False).encode("utf-8"))
    else:
        # Slow (Python) tokenizers have no serialisable pipeline; their special tokens are the
        # best available stand-in besides the vocabulary and the class (which fixes the rules).
        specials = sorted((k, str(v)) for k, v in tokenizer.special_tokens_map.items())
        digest.update(json.dumps(specials, ensure_ascii=False).encode("utf-8"))
    # The end-of-document id is written into stored token streams, so it is part of the meaning.
    digest.update(f"eod={eod_id}".encode())
    return digest.hexdigest()


class HFTokenizer:
    """A Hugging Face tokenizer loaded from a local directory.

    ``eod_id`` is the tokenizer's ``eos_token_id`` unless ``eod_token`` names another token;
    ``encode`` adds no special tokens (the pipeline appends EOD itself) and ``decode`` drops
    nothing, so ``decode(encode(text))`` is as faithful as the tokenizer allows.
    """

    def __init__(self, path: str | Path, *, eod_token: str | None = None) -> None:
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise TokenizerError(f"tokenizer directory {str(directory)!r} does not exist or is "
                                 "not a directory.")
        from transformers import AutoTokenizer  # heavy: only when a tokenizer is really loaded

        try:
            self._tok = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
        except Exception as err:  # transformers raises many types for unusable folders
            raise TokenizerError(f"cannot load a Hugging Face tokenizer from {str(directory)!r}: "
                                 f"{err}") from err
        vocab = self._tok.get_vocab()
        if eod_token is not None:
            if eod_token not in vocab:
                raise TokenizerError(f"tokenizer {str(directory)!r}: `eod_token` must be a token "
                                     f"of its vocabulary, but is {eod_token!r} instead.")
            eod_id = vocab[eod_token]
        elif self._tok.eos_token_id is not None:
            eod_id = self._tok.eos_token_id
        else:
            raise TokenizerError(f"tokenizer {str(directory)!r} has no eos token; pass "
                                 "`eod_token` to say which token ends a document.")
        self.name: str = directory.resolve().name
        self.eod_id: int = int(eod_id)
        # len() counts added tokens too; the max guards against gaps in hand-made vocabularies.
        self.vocab_size: int = max(len(self._tok), max(vocab.values(), default=-1) + 1)
        self.fingerprint: str = _fingerprint(self._tok, self.eod_id)

    def encode(self, text: str) -> list[int]:
        # verbose=False: documents are longer than model_max_length by design (we window them).
        return list(self._tok.encode(text, add_special_tokens=False, verbose=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False,
                                clean_up_tokenization_spaces=False)

    def __repr__(self) -> str:
        return (f"HFTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
                f"eod_id={self.eod_id}, fingerprint={self.fingerprint[:12]}...)")


class SentencePieceTokenizer:
    """A SentencePiece model, ``<directory>/tokenizer.model``, read with ``sentencepiece``.

    ``eod_id`` is the model's ``eos_id`` unless ``eod_token`` names another piece. ``encode``
    adds no BOS / EOS; ``decode`` is SentencePiece's (it drops the leading word-boundary space).
    The fingerprint hashes the serialised model (pieces, scores, normaliser rules) and the eod id.
    """

    MODEL_FILE = "tokenizer.model"

    def __init__(self, path: str | Path, *, eod_token: str | None = None) -> None:
        directory = Path(path).expanduser()
        model = directory / self.MODEL_FILE
        if not model.is_file():
            raise TokenizerError(f"tokenizer directory {str(directory)!r} has no {self.MODEL_FILE} "
                                 "(a SentencePiece model).")
        import sentencepiece  # a declared dependency; imported only when such a model is loaded

        self._sp = sentencepiece.SentencePieceProcessor()
        try:
            self._sp.Load(str(model))
        except (OSError, RuntimeError) as err:  # a corrupt or foreign file
            raise TokenizerError(f"cannot load the SentencePiece model {str(model)!r}: {err}") from err
        size = int(self._sp.GetPieceSize())
        if eod_token is not None:
            eod_id = self.piece_id(eod_token)
            if eod_id is None:
                raise TokenizerError(f"tokenizer {str(directory)!r}: `eod_token` must be a piece of its "
                                     f"vocabulary, but is {eod_token!r} instead.")
        elif 0 <= self._sp.eos_id() < size:
            eod_id = int(self._sp.eos_id())
        else:
            raise TokenizerError(f"tokenizer {str(directory)!r} has no eos piece (eos_id is "
                                 f"{self._sp.eos_id()}); pass `eod_token` to say which piece ends a document.")
        self.name: str = directory.resolve().name
        self.eod_id: int = eod_id
        self.vocab_size: int = size
        digest = hashlib.sha256(type(self).__name__.encode())
        digest.update(self._sp.serialized_model_proto())
        digest.update(f"eod={eod_id}".encode())
        self.fingerprint: str = digest.hexdigest()

    def piece_id(self, piece: str) -> int | None:
        """The id of a piece of the model's vocabulary, or None when it has no such piece."""
        token_id = int(self._sp.PieceToId(piece))
        return token_id if self._sp.IdToPiece(token_id) == piece else None

    def encode(self, text: str) -> list[int]:
        return [int(i) for i in self._sp.EncodeAsIds(text)]

    def decode(self, ids: Sequence[int]) -> str:
        return str(self._sp.DecodeIds([int(i) for i in ids]))

    def __repr__(self) -> str:
        return (f"SentencePieceTokenizer(name={self.name!r}, vocab_size={self.vocab_size}, "
                f"eod_id={self.eod_id}, fingerprint={self.fingerprint[:12]}...)")


_HF_CONFIG = "tokenizer_config.json"


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _sentencepiece_with_config(directory: Path) -> SentencePieceTokenizer:
    """A ``tokenizer.model`` folder read with SentencePiece; its tokenizer_config.json (if any)
    names the end-of-document token and must add no token the model lacks."""
    config_file = directory / _HF_CONFIG
    if not config_file.is_file():
        return SentencePieceTokenizer(directory)
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise TokenizerError(f"cannot read {str(config_file)!r}: {err}") from err
    if not isinstance(config, dict):
        raise TokenizerError(f"{str(config_file)!r} must hold a JSON object")
    eos = _token_text(config.get("eos_token"))
    tok = SentencePieceTokenizer(directory, eod_token=eos)
    added = [(int(i), _token_text(v)) for i, v in (config.get("added_tokens_decoder") or {}).items()]
    added += [(None, _token_text(v)) for v in config.get("additional_special_tokens") or ()]
    for token_id, text in added:
        known = text is not None and tok.piece_id(text)
        if known is None or (token_id is not None and known != token_id):
            where = f" at id {token_id}" if token_id is not None else ""
            raise TokenizerError(
                f"tokenizer {str(directory)!r}: {_HF_CONFIG} adds the token {text!r}{where}, which "
                f"its {SentencePieceTokenizer.MODEL_FILE} does not hold there; only a tokenizer.json "
                "says how such a token is encoded: save the tokenizer with transformers "
                "(tokenizer.save_pretrained) so the folder has one.")
    return tok


def load_tokenizer_dir(path: str | Path) -> Tokenizer:
    """The tokenizer a local directory holds (module docstring: which loader and why)."""
    directory = Path(path).expanduser()
    if not (directory / "tokenizer.json").is_file() \
            and (directory / SentencePieceTokenizer.MODEL_FILE).is_file():
        return _sentencepiece_with_config(directory)
    return HFTokenizer(directory)


#: name -> factory of registered (non-directory) tokenizers.
_REGISTRY: dict[str, Callable[[], Tokenizer]] = {}
#: Names whose providing module registers them on import (loaded on first use).
_PROVIDERS: dict[str, str] = {"world": "rlpt_plugin.world", "world-reasoning": "rlpt_plugin.world"}


def register_tokenizer(name: str, factory: Callable[[], Tokenizer], *,
                       replace: bool = False) -> None:
    """Make ``load_tokenizer(name)`` return ``factory()``.

    Registering an existing name again is an error unless ``replace`` is true, so two
    components cannot silently fight over one name.
    """
    if not isinstance(name, str) or not name or "/" in name:
        raise TokenizerError(f"tokenizer name must be a non-empty string without '/', but is "
                             f"{name!r} instead.")
    if not callable(factory):
        raise TokenizerError(f"tokenizer factory for {name!r} must be callable, but is "
                             f"{factory!r} instead.")
    if name in _REGISTRY and not replace:
        raise TokenizerError(f"tokenizer {name!r} is already registered (pass replace=True).")
    _REGISTRY[name] = factory


def registered_tokenizers() -> list[str]:
    """Names currently accepted by :func:`load_tokenizer` besides directories."""
    return sorted(_REGISTRY)


def load_tokenizer(spec: str) -> Tokenizer:
    """The tokenizer ``spec`` names: a registered name, or a local tokenizer directory."""
    if not isinstance(spec, str) or not spec.strip():
        raise TokenizerError(f"tokenizer spec must be a non-empty string, but is {spec!r} "
                             "instead.")
    if spec not in _REGISTRY and spec in _PROVIDERS:
        importlib.import_module(_PROVIDERS[spec])  # registers the name
    if spec in _REGISTRY:
        tokenizer = _REGISTRY[spec]()
        if not isinstance(tokenizer, Tokenizer):
            raise TokenizerError(f"the factory registered for tokenizer {spec!r} returned "
                                 f"{type(tokenizer).__name__}, which lacks the Tokenizer API.")
        return tokenizer
    if Path(spec).expanduser().is_dir():
        return load_tokenizer_dir(spec)
    names = sorted(set(_REGISTRY) | set(_PROVIDERS))
    raise TokenizerError(f"tokenizer spec {spec!r} is neither a local directory holding a Hugging "
                         f"Face or SentencePiece tokenizer nor a registered name (registered or reserved: "
                         f"{', '.join(names)}); downloads by model id are not supported.")
