"""Tests for vans.models.prompting: answer format, parsing and the chat prompt."""

from __future__ import annotations

import pytest

from vans.models.prompting import (
    SYSTEM_PROMPT,
    VIDEO_PAD,
    ParsedOutput,
    build_prompt,
    format_target,
    num_video_tokens,
    parse_output,
)


def test_system_prompt_is_the_papers():
    assert SYSTEM_PROMPT.startswith("You will be given a video.")
    for needle in ("predict the next event", "[Think]/[/Think]", "[Ans]/[/Ans]"):
        assert needle in SYSTEM_PROMPT


@pytest.mark.parametrize(
    "text",
    [
        "[Think]The man holds a knife.[/Think][Ans]He slices the onion.[/Ans]",
        "  [Think]The man holds a knife.[/Think]\n\n[Ans]He slices the onion.[/Ans]\n",
        "[think] The man holds a knife. [/think] [ANS]\nHe slices the onion.\n[/ans]",
        "[ Think ]The man holds a knife.[ /Think ][Ans]He slices the onion.[/ Ans ]",
    ],
)
def test_well_formed(text):
    assert parse_output(text) == ParsedOutput(
        think="The man holds a knife.", caption="He slices the onion.", well_formed=True
    )


def test_empty_think_block_is_well_formed():
    assert parse_output("[Think][/Think][Ans]He leaves.[/Ans]") == ParsedOutput(
        "", "He leaves.", True
    )


def test_multiline_blocks_keep_their_text():
    out = parse_output("[Think]line one\nline two[/Think][Ans]first\nsecond[/Ans]")
    assert out == ParsedOutput("line one\nline two", "first\nsecond", True)


@pytest.mark.parametrize(
    ("text", "think", "caption"),
    [
        # missing Think block
        ("[Ans]He slices the onion.[/Ans]", "", "He slices the onion."),
        # Ans not closed
        ("[Think]r[/Think][Ans] He slices the onion.", "r", "He slices the onion."),
        # no tags at all
        ("  He slices the onion.\n", "", "He slices the onion."),
        # Think not closed, then an answer
        ("[Think]r [Ans]He slices.[/Ans]", "r", "He slices."),
        # no Ans tags: the text after the Think block
        ("[Think]r[/Think] He slices the onion.", "r", "He slices the onion."),
        # only a closing Ans
        ("[Think]r[/Think]He slices.[/Ans]", "r", "He slices."),
        # duplicated Ans blocks: the last one with text
        ("[Think]r[/Think][Ans]first[/Ans][Ans]second[/Ans]", "r", "second"),
        ("[Think]r[/Think][Ans]first[/Ans][Ans] [/Ans]", "r", "first"),
        # nested tags
        ("[Think]a[Think]b[/Think][/Think][Ans]c[/Ans]", "a", "c"),
        ("[Think]r[/Think][Ans]He [Ans]slices[/Ans][/Ans]", "r", "slices"),
        # extra text around a valid template
        ("Sure! [Think]r[/Think][Ans]c[/Ans]", "r", "c"),
        ("[Think]r[/Think][Ans]c[/Ans] Hope this helps.", "r", "c"),
        ("[Think]r[/Think] so [Ans]c[/Ans]", "r", "c"),
        # an empty answer is no answer
        ("[Think]r[/Think][Ans]  [/Ans]", "r", ""),
        # Think only
        ("[Think]only thinking[/Think]", "only thinking", "only thinking"),
        ("[Think]only thinking", "only thinking", "only thinking"),
        # Ans before Think
        ("[Ans]c[/Ans][Think]r[/Think]", "r", "c"),
        # tags only
        ("[Think][/Think][Ans][/Ans]", "", ""),
        ("[Think]r[/Think][/Ans]", "r", ""),
    ],
)
def test_broken_templates_are_not_well_formed(text, think, caption):
    out = parse_output(text)
    assert out == ParsedOutput(think=think, caption=caption, well_formed=False)


@pytest.mark.parametrize("text", ["", "   \n", None, 42, "[", "[/]", "[Ans", "]]]["])
def test_never_raises(text):
    out = parse_output(text)
    assert isinstance(out, ParsedOutput)
    assert out.well_formed is False
    assert isinstance(out.caption, str) and isinstance(out.think, str)


def test_format_target_round_trips():
    target = format_target(" The knife is ready. ", "He slices the onion.\n")
    assert target == "[Think]The knife is ready.[/Think][Ans]He slices the onion.[/Ans]"
    assert parse_output(target) == ParsedOutput("The knife is ready.", "He slices the onion.", True)


@pytest.mark.parametrize("reasoning", [None, "", "  "])
def test_format_target_without_reasoning_keeps_an_empty_think(reasoning):
    target = format_target(reasoning, "He leaves.")
    assert target == "[Think][/Think][Ans]He leaves.[/Ans]"
    assert parse_output(target) == ParsedOutput("", "He leaves.", True)


@pytest.mark.parametrize(
    ("reasoning", "caption"), [("r", ""), ("r", "  "), ("a [Ans] b", "c"), ("r", "x[/think]")]
)
def test_format_target_rejects_unparseable_targets(reasoning, caption):
    with pytest.raises(ValueError):
        format_target(reasoning, caption)


def test_build_prompt_layout():
    prompt = build_prompt("What happens next?", 3, system_prompt="SYS")
    assert prompt == (
        "<|im_start|>system\nSYS<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|video_pad|><|video_pad|><|vision_end|>"
        "What happens next?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert build_prompt("q", 5).count(VIDEO_PAD) == 5
    assert SYSTEM_PROMPT in build_prompt("q", 1)
    with pytest.raises(ValueError):
        build_prompt("q", 0)


def test_num_video_tokens():
    assert num_video_tokens((2, 6, 8)) == 2 * 6 * 8 // 4
    assert num_video_tokens([1, 4, 4], merge_size=2) == 4
    with pytest.raises(ValueError):
        num_video_tokens((1, 3, 4))
