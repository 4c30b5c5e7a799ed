"""Prompt templates: the packaged rewrite prompt, rendering, versioning, malformed files."""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import pytest

from rlpt_plugin.teacher.templates import load_template, parse_template

PREFIX = "The Eiffel Tower was completed in 1889 and stands in the city of"
SUFFIX = "Berlin, where it attracts millions of visitors every year."

MINIMAL = """version: mini-v1
kind: chat
### user
Prefix: {prefix}
Suffix: {suffix}
Words: {num_words}
"""


def test_packaged_rewrite_template_renders_all_parts() -> None:
    tpl = load_template("rewrite_v1")
    text = resources.files("rlpt_plugin.teacher").joinpath("prompts", "rewrite_v1.txt").read_text()
    assert tpl.kind == "chat" and tpl.header_version == "rewrite-v1"
    assert tpl.version == "rewrite-v1+" + hashlib.sha256(text.encode()).hexdigest()[:10]
    r = tpl.render(PREFIX, SUFFIX)
    assert [role for role, _ in r.messages] == ["system", "user"]
    user = r.messages[1][1]
    assert PREFIX in user and SUFFIX in user
    assert r.num_words == 9
    assert "about 9 words" in user and "about 9 words" in r.messages[0][1]
    assert r.assistant_prefix == "stands in the city of"  # the last five words of the prefix
    assert r.prompt is None
    assert "{" not in user  # every placeholder filled


def test_assistant_prefix_keeps_original_spacing_and_short_prefixes() -> None:
    tpl = parse_template(MINIMAL)
    assert tpl.render("one two\nthree  four five six", "x").assistant_prefix == "two\nthree  four five six"
    assert tpl.render("  only three words", "x").assistant_prefix == "only three words"
    assert tpl.render("", "x").assistant_prefix == ""
    assert tpl.render("a b", "").num_words == 1  # never ask for zero words


def test_substitution_is_single_pass_and_leaves_other_braces() -> None:
    tpl = parse_template(MINIMAL.replace("Words: {num_words}", 'Words: {num_words} {"json": 1}'))
    r = tpl.render("prefix mentioning {suffix}", "the suffix")
    assert r.messages[0][1] == 'Prefix: prefix mentioning {suffix}\nSuffix: the suffix\nWords: 2 {"json": 1}'


def test_version_changes_when_file_text_changes(tmp_path: Path) -> None:
    (tmp_path / "t.txt").write_text(MINIMAL)
    v1 = load_template("t", directory=tmp_path).version
    assert v1.startswith("mini-v1+") and load_template("t", directory=tmp_path).version == v1
    (tmp_path / "t.txt").write_text(MINIMAL.replace("Prefix:", "Beginning:"))
    v2 = load_template("t", directory=tmp_path).version
    assert v2.startswith("mini-v1+") and v2 != v1


def test_completions_kind_and_comment_lines() -> None:
    tpl = parse_template("# a comment\nversion: c1\nkind: completions\nprime_words: 2\n### prompt\n{prefix}|{suffix}|{num_words}\n")
    r = tpl.render("a b c", "d e")
    assert (r.messages, r.prompt, r.assistant_prefix) == (None, "a b c|d e|2", "b c")


def test_sections_are_put_in_canonical_order() -> None:
    tpl = parse_template("version: v\nkind: chat\n### user\nU {prefix} {suffix}\n### system\nS {num_words}\n")
    assert [name for name, _ in tpl.sections] == ["system", "user"]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (MINIMAL.replace("{suffix}", "suffix"), r"missing placeholders \['\{suffix\}'\]"),
        (MINIMAL.replace("{num_words}", "{num_word}"), r"unknown placeholder \{num_word\} in section 'user'"),
        (MINIMAL.replace("### user", "### assistant"), "unknown section 'assistant' for kind 'chat'"),
        (MINIMAL.replace("version: mini-v1\n", ""), "header must set 'version'"),
        (MINIMAL.replace("kind: chat", "kind: tools"), r"kind must be one of \['chat', 'completions'\], got 'tools'"),
        (MINIMAL.replace("kind: chat", "kind: chat\ncolour: red"), "header lines must be 'key: value' with key in"),
        (MINIMAL.replace("kind: chat", "kind: chat\nkind: chat"), "header key 'kind' given twice"),
        (MINIMAL + "### user\n{prefix}\n", "section 'user' appears twice"),
        ("version: v\nkind: chat\n### system\n{prefix}{suffix}{num_words}\n", r"missing section 'user'"),
        ("version: v\nkind: chat\n### system\n\n### user\n{prefix}{suffix}{num_words}\n", "section 'system' is empty"),
        (MINIMAL.replace("kind: chat", "kind: chat\nprime_words: 0"), "prime_words must be an int >= 1, got '0'"),
    ],
)
def test_bad_templates_raise_clear_errors(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_template(text, name="bad")


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"name must be a packaged template, one of \[.*'rewrite_v1'.*\], got 'nope'"):
        load_template("nope")
    with pytest.raises(ValueError, match="no path, no .txt"):
        load_template("../etc/passwd")
    with pytest.raises(ValueError, match=r"name must name a file missing.txt in"):
        load_template("missing", directory=tmp_path)


def test_chat_template_renders_for_completions_as_one_prompt_before_the_prime() -> None:
    tpl = load_template("rewrite_v1")
    chat = tpl.render(PREFIX, SUFFIX)
    flat = tpl.render(PREFIX, SUFFIX, kind="completions")
    assert flat.messages is None and flat.assistant_prefix == chat.assistant_prefix == "stands in the city of"
    assert flat.prompt == chat.messages[0][1] + "\n\n" + chat.messages[1][1] + "\n\n"
    assert flat.num_words == chat.num_words
    assert tpl.render(PREFIX, SUFFIX, kind="chat") == chat


def test_completions_template_cannot_render_as_chat_and_kind_is_checked() -> None:
    tpl = parse_template("version: c-v1\nkind: completions\n### prompt\n{prefix} {suffix} {num_words}\n", name="c")
    assert tpl.render("a b", "c", kind="completions") == tpl.render("a b", "c")
    with pytest.raises(ValueError, match="template 'c' is a completions template and cannot be rendered as chat"):
        tpl.render("a b", "c", kind="chat")
    with pytest.raises(ValueError, match=r"kind must be one of \['chat', 'completions'\] or None, got 'embeddings'"):
        tpl.render("a b", "c", kind="embeddings")
