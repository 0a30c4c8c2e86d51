"""Tokenizers trained on the fly for tiny models (no downloads).

The tiny reasoner and renderer are the real Qwen2.5-VL and Wan2.1 classes at toy sizes;
they need tokenizers of the same kind as the real ones: a byte-level BPE with Qwen's
special tokens for the reasoner, a unigram (SentencePiece-style) tokenizer with T5's
pad/eos/unk layout for the umT5 text encoder. Both are trained on the toy world's
language (questions, reasoning, answers) and the system prompt.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from tokenizers import (
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)
from transformers import PreTrainedTokenizerFast

from vans.data.toyworld import ToyWorldConfig, iter_samples
from vans.data.toyworld.perception import option_sentence, perception_questions
from vans.models.prompting import SYSTEM_PROMPT, format_target

QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
"""The special tokens of Qwen2.5-VL's tokenizer that the chat format and video input use."""

T5_SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")
"""umT5's ids 0, 1, 2: pad, end of sequence, unknown."""


def toy_corpus(num_samples: int = 400, seed: int = 0) -> list[str]:
    """The texts of `num_samples` toy-world samples (questions, answers, reasoning, clip
    descriptions, perception questions and answers), the system prompt and the
    answer template, for training
    tiny tokenizers. The toy grammar is small: 400 samples cover its vocabulary."""
    texts: list[str] = [SYSTEM_PROMPT, format_target("reasoning", "caption")]
    config = ToyWorldConfig(num=num_samples, seed=seed, multi_future=1.0, size=(32, 32))
    rng = np.random.default_rng(seed)
    for s in iter_samples(config):
        texts += [s.question, s.answer, s.reasoning]
        texts += [s.extra["description"], s.extra["target_description"]]
        for question, answer in perception_questions(rng, s.extra):
            texts += [question, answer]
        texts += [m["question"] for m in s.extra["mcq"]]
        for mcq in s.extra["perception_mcq"]:
            texts += [
                mcq["question"],
                *(option_sentence(mcq, i) for i in range(len(mcq["options"]))),
            ]
    return texts


def toy_tokenizers() -> tuple[PreTrainedTokenizerFast, PreTrainedTokenizerFast]:
    """The reasoner's and the text encoder's tokenizers, trained on `toy_corpus()`: what
    every randomly initialised model of the project reads with (no download)."""
    corpus = toy_corpus()
    return train_reasoner_tokenizer(corpus), train_text_encoder_tokenizer(corpus)


def train_reasoner_tokenizer(
    texts: Iterable[str], vocab_size: int = 1024
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with Qwen2.5-VL's special tokens (any text encodes)."""
    tok = _byte_level_bpe(texts, vocab_size, QWEN_SPECIAL_TOKENS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=list(QWEN_SPECIAL_TOKENS[1:]),
    )


def train_text_encoder_tokenizer(
    texts: Iterable[str], vocab_size: int = 512
) -> PreTrainedTokenizerFast:
    """A unigram tokenizer laid out like umT5's: pad 0, eos 1 (appended), unk 2."""
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size,
        special_tokens=list(T5_SPECIAL_TOKENS),
        unk_token="<unk>",
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


CLIP_SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
"""CLIP's begin/end-of-text tokens; the text tower pools at the end-of-text token."""


def train_clip_tokenizer(texts: Iterable[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """A lowercasing byte-level BPE wrapped in <|startoftext|> ... <|endoftext|>, as CLIP's."""
    tok = _byte_level_bpe(texts, vocab_size, CLIP_SPECIAL_TOKENS, lowercase=True)
    bos, eos = (tok.token_to_id(t) for t in CLIP_SPECIAL_TOKENS)
    tok.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", bos), ("<|endoftext|>", eos)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )


def _byte_level_bpe(
    texts: Iterable[str], vocab_size: int, special_tokens: Iterable[str], lowercase: bool = False
) -> Tokenizer:
    """A byte-level BPE (every text encodes) trained on `texts`, with `special_tokens` first."""
    tok = Tokenizer(models.BPE())
    if lowercase:
        tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer)
    return tok
