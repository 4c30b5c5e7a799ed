"""HFBackend with a tiny randomly initialised local GPT-2 and a WordLevel tokenizer (no downloads)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from rlpt_plugin.teacher.hf_backend import HFBackend  # noqa: E402
from rlpt_plugin.teacher.protocol import GenerationRequest, SamplingParams, TeacherClient  # noqa: E402

WORDS = ("the cat dog sat ran on under a mat hat red blue big small and then it was very happy sad "
         "user system assistant : quick brown fox jumps over lazy old man sea boat").split()  # fmt: skip
SPECIALS = ["[PAD]", "[UNK]", "[EOS]"]
CONTEXT = 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    path = tmp_path_factory.mktemp("tiny-gpt2")
    vocab = {w: i for i, w in enumerate(SPECIALS + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")
    tok.save_pretrained(path)
    config = GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(vocab), n_positions=CONTEXT,
                        bos_token_id=vocab["[EOS]"], eos_token_id=vocab["[EOS]"],
                        initializer_range=0.5)  # fmt: skip  # large weights: less repetitive output
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def backend(model_dir: Path) -> HFBackend:
    return HFBackend(str(model_dir), max_batch=2)


def reference_greedy(backend: HFBackend, prompt_ids: list[int], steps: int) -> list[int]:
    """Independent greedy decode: full forward each step, no cache, no batching."""
    ids = list(prompt_ids)
    out: list[int] = []
    with torch.no_grad():
        for _ in range(steps):
            logits = backend.model(input_ids=torch.tensor([ids])).logits[0, -1]
            nxt = int(logits.argmax())
            if nxt in backend._eos:
                break
            out.append(nxt)
            ids.append(nxt)
    return out


def test_is_a_teacher_client_with_config_hashed_model_id(backend: HFBackend, model_dir: Path) -> None:
    assert isinstance(backend, TeacherClient)
    name, digest = backend.model_id.split("@")
    assert name == model_dir.name and len(digest) == 12
    assert backend.context_length == CONTEXT


def test_greedy_matches_reference_and_is_deterministic(backend: HFBackend) -> None:
    params = SamplingParams(temperature=0.0, max_tokens=6)
    reqs = [
        GenerationRequest("a", params, prompt="the quick brown fox", assistant_prefix=" jumps"),
        GenerationRequest("b", params, prompt="a red hat"),  # shorter: left-padded in the batch
        GenerationRequest("c", params, messages=(("system", "be happy"), ("user", "the old man and the sea"))),
    ]
    first = asyncio.run(backend.generate(reqs))
    second = asyncio.run(backend.generate(list(reversed(reqs))))[::-1]  # other batch composition
    assert [r.request_id for r in first] == ["a", "b", "c"]
    assert all(r.ok and r.attempts == 1 for r in first), [r.error for r in first]
    assert [r.text for r in first] == [r.text for r in second]
    tok = backend.tokenizer
    prompts = [tok("the quick brown fox jumps")["input_ids"], tok("a red hat")["input_ids"],
               tok("system : be happy\nuser : the old man and the sea\nassistant : ")["input_ids"]]  # fmt: skip
    for res, prompt in zip(first, prompts):
        expected = reference_greedy(backend, prompt, 6)
        assert res.text == tok.decode(expected, skip_special_tokens=True)
        assert res.finish_reason == ("length" if len(expected) == 6 else "stop")


def test_seeded_sampling_is_reproducible(backend: HFBackend) -> None:
    def sample(seed: int) -> str | None:
        params = SamplingParams(temperature=5.0, top_p=0.9, max_tokens=8, seed=seed)
        return asyncio.run(backend.generate([GenerationRequest("s", params, prompt="the cat")]))[0].text

    texts = {seed: sample(seed) for seed in range(4)}
    assert texts[0] == sample(0) and texts[3] == sample(3)
    assert len(set(texts.values())) > 1  # a hot distribution: seeds do change the sample


def test_stop_string_cuts_the_answer(backend: HFBackend) -> None:
    params = SamplingParams(max_tokens=6)
    [full] = asyncio.run(backend.generate([GenerationRequest("a", params, prompt="the quick brown fox")]))
    words = (full.text or "").split()
    if len(words) < 2:
        pytest.skip("the random model stopped too early to test stop strings")
    stopped_params = SamplingParams(max_tokens=6, stop=(words[1],))
    [cut] = asyncio.run(backend.generate([GenerationRequest("a", stopped_params, prompt="the quick brown fox")]))
    assert cut.finish_reason == "stop" and cut.text == full.text[: full.text.find(words[1])]


def test_overlong_prompt_fails_without_raising(backend: HFBackend) -> None:
    params = SamplingParams(max_tokens=4)
    reqs = [GenerationRequest("long", params, prompt="cat " * 40), GenerationRequest("ok", params, prompt="the cat")]
    long, ok = asyncio.run(backend.generate(reqs))
    assert not long.ok and long.error == f"prompt of 40 tokens does not fit the model context of {CONTEXT}"
    assert ok.ok


def test_bad_arguments(model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="model_path must be a local model directory with config.json"):
        HFBackend(str(tmp_path))
    with pytest.raises(ValueError, match="max_batch must be an int >= 1, got 0"):
        HFBackend(str(model_dir), max_batch=0)
    with pytest.raises(ValueError, match="dtype must name a torch dtype"):
        HFBackend(str(model_dir), dtype="float99")


def test_model_id_changes_with_config(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / model_dir.name
    shutil.copytree(model_dir, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg["layer_norm_epsilon"] = 1e-3  # same weights, different model: a different id
    (copy / "config.json").write_text(json.dumps(cfg))
    assert HFBackend(str(copy)).model_id != HFBackend(str(model_dir)).model_id


def test_chat_template_is_used_when_the_tokenizer_has_one(model_dir: Path, tmp_path: Path) -> None:
    import shutil

    from transformers import AutoTokenizer

    copy = tmp_path / "with-template"
    shutil.copytree(model_dir, copy)
    tok = AutoTokenizer.from_pretrained(str(copy), local_files_only=True)
    tok.chat_template = ("{% for m in messages %}{{ m['role'] }} says {{ m['content'] }} . {% endfor %}"
                         "{% if add_generation_prompt %}assistant says {% endif %}")  # fmt: skip
    tok.save_pretrained(copy)
    chat_backend = HFBackend(str(copy))
    req = GenerationRequest("t", SamplingParams(max_tokens=3), messages=(("user", "the cat"),), assistant_prefix="a big")
    expected = tok("user says the cat . assistant says a big", add_special_tokens=False)["input_ids"]
    assert chat_backend._prompt_ids(req) == expected
    [res] = asyncio.run(chat_backend.generate([req]))
    assert res.ok and res.text == tok.decode(reference_greedy(chat_backend, expected, 3), skip_special_tokens=True)
