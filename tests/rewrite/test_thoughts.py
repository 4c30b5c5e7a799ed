"""Tag normalisation, the strip check and the splice into token ids (rlpt_plugin/teacher/thoughts.py,
think_rewriter.py)."""

from __future__ import annotations

import pytest

from rlpt_plugin.teacher.think_rewriter import ThinkInput, classify_answer, splice
from rlpt_plugin.teacher.thoughts import (
    THINK_CLOSE,
    THINK_OPEN,
    Thought,
    ThoughtError,
    normalise_tags,
    parse_thoughts,
    split_thoughts,
)
from tests.rewrite.fixtures import WORDS, make_tokenizer_dir

THINK_WORDS = [*WORDS, THINK_OPEN, THINK_CLOSE]


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from rlpt_plugin.data.tokenizer import load_tokenizer

    return load_tokenizer(str(make_tokenizer_dir(tmp_path_factory.mktemp("tok"), THINK_WORDS)))


def test_every_tag_variant_becomes_the_one_pair():
    text = "a <Thinking>x</thinking> b < thought >y</ THOUGHT> c <reasoning>z</think> <thoughts>q</thoughts>"
    assert normalise_tags(text) == ("a <think>x</think> b <think>y</think> c <think>z</think> "
                                    "<think>q</think>")
    assert normalise_tags("a < b and <b>bold</b> <thinker>") == "a < b and <b>bold</b> <thinker>"


@pytest.mark.parametrize(("answer", "original", "offsets"), [
    ("a <think>t</think> b", "a b", [2]),
    ("a\n<think>t</think>\nb", "a\nb", [2]),
    ("a<think>t</think> b", "a b", [1]),
    ("a <THINKING> t </Thinking>b", "a b", [2]),
    ("<think>first</think> a b", "a b", [0]),
    ("a b <think>last</think>", "a b", [3]),
    ("a <think>t</think>  b", "a b", [2]),  # the whole whitespace run after the block goes with it
    ("a b <think>last</think>\n", "a b\n\n", [5]),  # after the original's trailing whitespace
    ("  a <think>x</think> b <thought>y</thought> c\n", "a b c", [2, 4]),
    ("a<think>x</think><think>y</think> b", "a b", [1, 1]),
])
def test_stripping_the_thoughts_gives_back_the_original(answer, original, offsets):
    thoughts = parse_thoughts(answer, original)
    assert [t.offset for t in thoughts] == offsets
    assert all(t.body and t.body == t.body.strip() for t in thoughts)


@pytest.mark.parametrize(("answer", "reason"), [
    ("a b", "no_thoughts"),
    ("a <think>t</think> c", "thoughts_changed_text"),
    ("a  <think>t</think> b", "thoughts_changed_text"),  # one space too many is a change
    ("a <think>t</think> b.", "thoughts_changed_text"),
    ("a </think> b", "unbalanced_tags"),
    ("a <think>t <think>u</think> b", "unbalanced_tags"),
    ("a <think>t b", "unbalanced_tags"),
    ("a <think> \n </think> b", "empty_thought"),
])
def test_bad_answers_are_refused_with_their_reason(answer, reason):
    with pytest.raises(ThoughtError) as info:
        parse_thoughts(answer, "a b")
    assert info.value.reason == reason and str(info.value).startswith(reason + ":")


def test_split_thoughts_keeps_the_text_outside_the_tags():
    assert split_thoughts("x <think>y</think> z") == ("x z", [(2, "y")])


def test_splice_keeps_the_original_ids_and_masks_the_thoughts(tok):
    ids = tok.encode("w1 w2 w3 w4")
    item = ThinkInput("0:0", tuple(ids), tok.decode(ids))
    out = classify_answer(item, "w1 w2 <think> w7 w8 </think> w3 <thought>w9</thought> w4", tok)
    assert out.status == "augmented" and out.num_thoughts == 2 and out.error is None
    assert [t for t, m in zip(out.token_ids, out.thought_mask) if m == 0] == ids
    assert tok.decode(out.token_ids) == "w1 w2 <think> w7 w8 </think> w3 <think> w9 </think> w4"
    assert sum(out.thought_mask) == 7


def test_a_thought_inside_a_token_is_refused(tok):
    ids = tok.encode("w1 w23")
    item = ThinkInput("0:0", tuple(ids), "w1 w23")
    with pytest.raises(ValueError, match="thought_splits_token"):
        splice(item, [Thought(4, "x")], tok)
    assert classify_answer(item, "w1 w2<think>x</think>3", tok).status == "thought_splits_token"


@pytest.mark.parametrize(("answer", "status"), [
    ("", "empty"), ("  \n", "empty"), ("I'm sorry, but I can't help with that.", "refused"),
    ("w1 w2", "no_thoughts"), ("w1 <think>x</think> w3", "thoughts_changed_text"),
    ("w1 <think>x w2", "unbalanced_tags"),
])
def test_classify_answer_drops_with_a_reason(tok, answer, status):
    ids = tok.encode("w1 w2")
    out = classify_answer(ThinkInput("3:1", tuple(ids), tok.decode(ids)), answer, tok)
    assert out.status == status and out.token_ids == () and out.error.startswith(status)


@pytest.fixture(scope="module")
def bpe(tmp_path_factory):
    """A byte-level BPE tokenizer trained here on a few sentences (spaces glued to the next word,
    as GPT-2 / Llama-3 tokenizers do; no think tokens: the tags are spelled in ordinary tokens)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from rlpt_plugin.data.tokenizer import load_tokenizer

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    text = ["The river town was founded in 1820 by settlers from the north.",
            "They built a mill, and the town grew to 3000 people by 1900.", "Think before you write."] * 20
    core.train_from_iterator(text, trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    path = tmp_path_factory.mktemp("bpe")
    PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>").save_pretrained(str(path))
    return load_tokenizer(str(path))


def test_splice_with_a_bpe_tokenizer_keeps_the_chunk_ids(bpe):
    chunk = "The town was founded in 1820 by settlers.\nIt grew to 3000 people by 1900."
    ids = bpe.encode(chunk)
    item = ThinkInput("0:0", tuple(ids), bpe.decode(ids))
    assert item.text == chunk
    answer = ("The town was founded in 1820 <think>That is about two centuries ago.</think> by settlers.\n"
              "<thinking>How many people next?</thinking>\nIt grew to 3000 people by 1900.")
    out = classify_answer(item, answer, bpe)
    assert out.status == "augmented", out.error
    assert [t for t, m in zip(out.token_ids, out.thought_mask) if m == 0] == ids
    text = bpe.decode(out.token_ids)
    assert text.count("<think>") == 2 and "<thinking>" not in text
    assert "1820<think> That is about two centuries ago. </think> by" in text
    assert "\n<think> How many people next? </think>It grew" in text
