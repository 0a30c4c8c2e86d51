"""What the reasoner reads and writes: the system prompt, the chat format and the answer format.

Answer format (docs/paper_facts.md#answer-format): the model reasons inside
`[Think]...[/Think]`, then describes the next event inside `[Ans]...[/Ans]`; only the `[Ans]`
text reaches the video generator.

Chat format: Qwen2.5-VL's ChatML. `build_prompt` writes exactly what Qwen2.5-VL-Instruct's chat
template renders for

    [{"role": "system", "content": SYSTEM_PROMPT},
     {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]}]

with `add_generation_prompt=True`, after the processor has expanded the single
`<|video_pad|>` into one pad per merged video token:

    <|im_start|>system\\n{system}<|im_end|>\\n<|im_start|>user\\n<|vision_start|>
    <|video_pad|>...<|video_pad|><|vision_end|>{question}<|im_end|>\\n<|im_start|>assistant\\n

(no line break between `<|vision_end|>` and the question, nor around the video pads). The
template's `add_vision_id` option ("Video 1: " before the video) is off, as by default. The
assistant turn is the target (`format_target`) followed by `<|im_end|>`; the template also
writes a "\\n" after that `<|im_end|>`, which no loss or log-probability needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

SYSTEM_PROMPT = (
    "You will be given a video. Your task is to predict the next event based on the input "
    "video and the user’s instructions. Please begin by providing your detailed reasoning "
    "between the [Think]/[/Think] tags, followed by your detailed description of the next "
    "event within the [Ans]/[/Ans] tags."
)
"""The system prompt of the VANS paper (appendix C.2), verbatim."""

ASSISTANT_PROMPT = "You are a helpful assistant."
"""Qwen2.5-VL-Instruct's default system prompt: what the toy reasoner base is pretrained and
measured with (a general assistant, not VANS)."""

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
"""Ends every chat turn; the reasoner stops generating when it writes it."""
END_OF_TEXT = "<|endoftext|>"
"""Qwen's padding (and document end) token."""
VISION_START = "<|vision_start|>"
VISION_END = "<|vision_end|>"
VIDEO_PAD = "<|video_pad|>"
"""Placeholder the model replaces with one merged video token from the vision tower."""
IMAGE_PAD = "<|image_pad|>"

THINK_OPEN, THINK_CLOSE = "[Think]", "[/Think]"
ANS_OPEN, ANS_CLOSE = "[Ans]", "[/Ans]"


def num_video_tokens(grid_thw: tuple[int, int, int] | list[int], merge_size: int = 2) -> int:
    """Language-model tokens for a video grid (t, h, w): t * h * w / merge_size**2."""
    t, h, w = (int(v) for v in grid_thw)
    if (h % merge_size) or (w % merge_size):
        raise ValueError(f"grid {t}x{h}x{w} is not divisible by merge size {merge_size}")
    return t * h * w // merge_size**2


def build_prompt(question: str, video_tokens: int, system_prompt: str = SYSTEM_PROMPT) -> str:
    """The chat text up to the assistant's answer, with `video_tokens` video pads."""
    if video_tokens <= 0:
        raise ValueError(f"a video needs at least one token, got {video_tokens}")
    return (
        f"{IM_START}system\n{system_prompt}{IM_END}\n"
        f"{IM_START}user\n{VISION_START}{VIDEO_PAD * video_tokens}{VISION_END}{question}{IM_END}\n"
        f"{IM_START}assistant\n"
    )


def format_target(reasoning: str | None, caption: str) -> str:
    """The answer the reasoner is trained to write: `[Think]reasoning[/Think][Ans]caption[/Ans]`.

    Both parts are stripped. Without reasoning (None or blank) the Think block stays, empty
    (`[Think][/Think][Ans]caption[/Ans]`): the template, and so the format reward, stays the
    same for samples with and without a reasoning trace. Raises ValueError for an empty
    caption or for text that contains one of the four tags (the target would not parse back).
    """
    reasoning = (reasoning or "").strip()
    caption = caption.strip()
    if not caption:
        raise ValueError("the caption of the next event is empty")
    for part, name in ((reasoning, "reasoning"), (caption, "caption")):
        if _TAG.search(part):
            raise ValueError(f"the {name} contains a [Think]/[Ans] tag: {part!r}")
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{ANS_OPEN}{caption}{ANS_CLOSE}"


@dataclass
class ParsedOutput:
    """What the reasoner wrote, split into its reasoning and its caption of the next event."""

    think: str
    """Text of the Think block ("" if there is none)."""
    caption: str
    """Text of the Ans block, or the best guess at the answer if the template is broken."""
    well_formed: bool
    """True iff the text follows the template (the format reward r_f is 1): optional
    whitespace, one `[Think]...[/Think]` block, optional whitespace, one `[Ans]...[/Ans]`
    block with a non-blank answer, optional whitespace, and nothing else. Tags match case-
    insensitively and may hold spaces (`[ /ans ]`); the blocks may not contain further tags.
    An empty Think block is allowed, a missing one is not."""


# One of the four tags, e.g. "[Think]", "[/ANS]", "[ /think ]".
_TAG = re.compile(r"\[\s*(/?)\s*(think|ans)\s*\]", re.IGNORECASE)


def parse_output(text: str) -> ParsedOutput:
    """Split a generated answer into reasoning and caption. Never raises.

    A well-formed text gives its two blocks, stripped. Otherwise the best guesses are:
    think = the text after the first [Think] up to the next tag (or the end), "" without
    [Think]; caption = the last non-blank [Ans] block (up to its [/Ans], the next tag or the
    end), "" if there are [Ans] tags but every block is blank; with a stray [/Ans] and no
    [Ans], the text before it (after any [/Think]); with no Ans tag at all, the text after
    the last [/Think] or, failing that, the whole text with every tag removed. (So an answer
    the model left empty stays empty rather than being replaced by its reasoning.)
    """
    if not isinstance(text, str):
        text = "" if text is None else str(text)
    tags = [
        (m.start(), m.end(), m.group(1) == "/", m.group(2).lower()) for m in _TAG.finditer(text)
    ]
    kinds = [(closing, name) for _, _, closing, name in tags]
    expected = [(False, "think"), (True, "think"), (False, "ans"), (True, "ans")]
    if kinds == expected:
        before = text[: tags[0][0]]
        between = text[tags[1][1] : tags[2][0]]
        after = text[tags[3][1] :]
        think = text[tags[0][1] : tags[1][0]].strip()
        caption = text[tags[2][1] : tags[3][0]].strip()
        if not (before.strip() or between.strip() or after.strip()) and caption:
            return ParsedOutput(think=think, caption=caption, well_formed=True)
    return ParsedOutput(
        think=_guess_think(text, tags), caption=_guess_caption(text, tags), well_formed=False
    )


def segment_spans(text: str) -> dict[str, tuple[int, int]]:
    """Character spans `[start, end)` of the blocks of a generated answer, tags included:
    "think" from the first [Think] to the [/Think] after it, "answer" from the first [Ans]
    to the [/Ans] after it (`block_spans`). For segment-aware advantages: the tokens of each
    span are judged by the rewards of that segment."""
    return block_spans(text, _TAG, {"think": "think", "answer": "ans"})


def block_spans(text: str, tag: re.Pattern, names: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Spans `[start, end)` of tagged blocks, tags included, by segment: `tag` matches an
    opening or closing tag, group 1 the "/" of a closing one, group 2 its name;
    `names[segment]` is the tag name of each segment. A block runs from the first opening
    tag of its name to the closing tag after it, or to the next tag (or the end of the text)
    when that is missing; a block without its opening tag is absent."""
    tags = list(tag.finditer(text))
    spans: dict[str, tuple[int, int]] = {}
    for segment, name in names.items():
        opening = next(
            (i for i, m in enumerate(tags) if m.group(2).lower() == name and not m.group(1)), None
        )
        if opening is None:
            continue
        later = tags[opening + 1 :]
        closing = next((m for m in later if m.group(2).lower() == name and m.group(1)), None)
        end = closing.end() if closing else (later[0].start() if later else len(text))
        spans[segment] = (tags[opening].start(), end)
    return spans


def _block_after(text: str, tags: list, index: int) -> str:
    """The text after tag `index` up to the next tag (or the end), stripped."""
    end = tags[index + 1][0] if index + 1 < len(tags) else len(text)
    return text[tags[index][1] : end].strip()


def _without_tags(text: str) -> str:
    """The text with every tag removed and its whitespace runs collapsed to one space."""
    return " ".join(_TAG.sub(" ", text).split())


def _guess_think(text: str, tags: list) -> str:
    for i, (_, _, closing, name) in enumerate(tags):
        if name == "think" and not closing:
            return _block_after(text, tags, i)
    return ""


def _guess_caption(text: str, tags: list) -> str:
    opens = [i for i, t in enumerate(tags) if t[3] == "ans" and not t[2]]
    closes = [t for t in tags if t[3] == "ans" and t[2]]
    if opens:
        # The last [Ans] block with something in it ("" if every Ans block is blank).
        blocks = (_block_after(text, tags, i) for i in reversed(opens))
        return next((block for block in blocks if block), "")
    if closes:
        # A closing [/Ans] without an opening: the text before it, after any Think block.
        start = max(
            (t[1] for t in tags if t[3] == "think" and t[2] and t[0] < closes[0][0]), default=0
        )
        return _without_tags(text[start : closes[0][0]])
    # No Ans tag at all: the text after the last [/Think], else everything.
    think_closes = [t for t in tags if t[3] == "think" and t[2]]
    if think_closes and (guess := _without_tags(text[think_closes[-1][1] :])):
        return guess
    return _without_tags(text) if tags else text.strip()
