"""Tests for the Joint-GRPO rewards (vans.rewards.vans) and reward videos
(vans.rewards.reward_videos) on tiny random models."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import math

import pytest
import torch

from vans.errors import ConfigError
from vans.evaluation.embedders import CLIPEmbedder
from vans.evaluation.text_metrics import rouge_l
from vans.evaluation.toy_embedder import ToyEmbedder, build_vocab
from vans.evaluation.video_metrics import clip_t, clip_v
from vans.models.checkpoint import VANSSettings
from vans.models.tiny import toy_corpus, train_text_encoder_tokenizer
from vans.models.vdm import Renderer
from vans.rewards.reward_videos import deduplicate, render_reward_videos
from vans.rewards.vans import (
    RewardFunction,
    RewardInputs,
    caption_rewards,
    captions_of,
    format_rewards,
    stage1_rewards,
    stage2_rewards,
    video_rewards,
    video_text_rewards,
)
from vans.rl.config import RewardVideoConfig

CAPTIONS = ["the red ball rolls to the left", "a blue square falls", "a green circle bounces"]

# --------------------------------------------------------------------------- r_f, r_t1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[Think]it moves left[/Think][Ans]the ball hits the wall[/Ans]", 1.0),
        ("  [Think][/Think]\n[Ans] the ball stops [/Ans]\n", 1.0),  # empty Think is allowed
        ("[Ans]the ball stops[/Ans]", 0.0),  # no Think block
        ("[Think]it moves[/Think]", 0.0),  # no Ans block
        ("[Think]it moves[/Think]the ball stops", 0.0),
        ("[Ans]the ball stops[/Ans][Think]it moves[/Think]", 0.0),  # wrong order
        ("[Think]it moves[/Think][Ans]   [/Ans]", 0.0),  # blank answer
        ("[Think]a[/Think] so [Ans]b[/Ans]", 0.0),  # text between the blocks
        ("[Think]a[/Think][Ans]b[/Ans] done", 0.0),  # text after
        ("[Think]a[Think]b[/Think][Ans]c[/Ans]", 0.0),  # a tag inside a block
        ("[Think]a[/Think][Ans]b[/Ans][Ans]c[/Ans]", 0.0),  # two answers
        ("]]][/Ans[Think garbage \x00", 0.0),
        ("", 0.0),
    ],
)
def test_format_reward_hand_cases(text, expected):
    assert format_rewards([text]) == [expected]


def test_caption_reward_is_the_evaluation_rouge_l():
    completions = [
        "[Think]x[/Think][Ans]a red ball rolls left[/Ans]",
        "a red ball rolls left",  # no template: the whole text is the caption guess
        "[Think]the red ball rolls[/Think][Ans][/Ans]",  # blank answer: no caption
        "",
        "[Think]x[/Think][Ans]The red ball, rolls to the LEFT.[/Ans]",
    ]
    truth = "the red ball rolls to the left"
    # Hand case: LCS("a red ball rolls left", truth) = 4, P = 4/5, R = 4/7.
    p, r = 4 / 5, 4 / 7
    hand = {"rouge-score": 2 * p * r / (p + r), "coco": 2.44 * p * r / (r + 1.44 * p)}
    for variant, value in hand.items():
        rewards = caption_rewards(completions, truth, variant)
        assert rewards == [rouge_l(c, truth, variant) for c in captions_of(completions)]
        assert rewards[:4] == pytest.approx([value, value, 0.0, 0.0], abs=1e-12)
        assert rewards[4] == pytest.approx(1.0)
    assert caption_rewards(completions, truth) == caption_rewards(completions, truth, "coco")
    # One truth per completion, checked for length.
    per_sample = caption_rewards(completions[:2], [truth, "a blue square falls"])
    assert per_sample[1] == rouge_l("a red ball rolls left", "a blue square falls")
    with pytest.raises(ValueError, match="2 completions but 1 ground truths"):
        caption_rewards(completions[:2], [truth])


# --------------------------------------------------------------------------- CLIP rewards


@pytest.fixture(scope="module")
def clip_embedder():
    return CLIPEmbedder.tiny(seed=0, image_size=32)


@pytest.fixture(scope="module")
def toy_embedder():
    torch.manual_seed(0)
    return ToyEmbedder.untrained(build_vocab(CAPTIONS))


@pytest.fixture(params=["clip", "toy"])
def embedder(request, clip_embedder, toy_embedder):
    return clip_embedder if request.param == "clip" else toy_embedder


class CountingEmbedder:
    """Forwards to an embedder and counts its calls."""

    def __init__(self, inner):
        self.inner, self.name = inner, inner.name
        self.frame_calls = self.text_calls = 0

    def embed_frames(self, frames):
        self.frame_calls += 1
        return self.inner.embed_frames(frames)

    def embed_texts(self, texts):
        self.text_calls += 1
        return self.inner.embed_texts(texts)


def random_video(seed, frames=9, size=(32, 32)):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (frames, *size, 3), generator=g, dtype=torch.uint8)


def test_clip_rewards_equal_the_evaluation_metrics(embedder):
    videos = torch.stack([random_video(i) for i in range(4)])
    truth = random_video(10, frames=13, size=(48, 40))  # other frame count and size
    counting = CountingEmbedder(embedder)
    rewards = video_rewards(counting, videos, truth)
    assert counting.frame_calls == 2  # the truth once, all G videos in one call
    assert rewards == pytest.approx([clip_v(embedder, v, truth) for v in videos], abs=1e-5)

    truth_embeddings = embedder.embed_frames(truth)
    counting.frame_calls = 0
    cached = video_rewards(counting, videos, truth, truth_embeddings=truth_embeddings)
    assert counting.frame_calls == 1 and cached == rewards

    captions = [CAPTIONS[0], CAPTIONS[1], CAPTIONS[0], ""]
    counting.frame_calls = 0
    text_rewards = video_text_rewards(counting, videos, captions)
    assert counting.frame_calls == 1 and counting.text_calls == 1
    expected = [clip_t(embedder, v, c) for v, c in zip(videos, captions, strict=True)]
    assert text_rewards == pytest.approx(expected, abs=1e-5)


def test_clip_rewards_of_degenerate_videos_are_finite(embedder):
    black = torch.zeros(9, 32, 32, 3, dtype=torch.uint8)
    static = random_video(1, frames=1).expand(9, -1, -1, -1)
    videos = [
        black,
        torch.full((9, 32, 32, 3), 255, dtype=torch.uint8),
        static,
        random_video(2, frames=1),  # a single frame
        random_video(3, frames=17, size=(24, 64)),  # longer, another size
    ]
    truth = random_video(4)
    v = video_rewards(embedder, videos, truth)
    t = video_text_rewards(embedder, videos, "")
    for value in v + t:
        assert math.isfinite(value) and -1 - 1e-5 <= value <= 1 + 1e-5
    assert v[3] == pytest.approx(clip_v(embedder, videos[3], truth), abs=1e-5)
    # A video scored against itself, or a static video against a matching static truth: 1.
    assert video_rewards(embedder, [truth, static], truth) == pytest.approx(
        [1.0, clip_v(embedder, static, truth)], abs=1e-5
    )
    assert video_rewards(embedder, [black], black) == pytest.approx([1.0], abs=1e-5)


def test_clip_rewards_reject_bad_videos(toy_embedder):
    truth = random_video(0)
    with pytest.raises(ValueError, match=r"video 1: expected uint8 \(T, H, W, 3\)"):
        video_rewards(toy_embedder, [truth, truth.float()], truth)
    with pytest.raises(ValueError, match="video 0: empty video"):
        video_rewards(toy_embedder, [truth[:0]], truth)
    with pytest.raises(ValueError, match="truth: expected uint8"):
        video_rewards(toy_embedder, [truth], truth[0])
    with pytest.raises(ValueError, match="2 videos but 3 captions"):
        video_text_rewards(toy_embedder, [truth, truth], ["a", "b", "c"])


def test_reward_functions_for_the_trainer(toy_embedder):
    truth_video = random_video(0)
    completions = [
        "[Think]x[/Think][Ans]the red ball rolls to the left[/Ans]",
        "the red ball",
        "",
    ]
    videos = torch.stack([truth_video, random_video(1), random_video(2)])
    inputs = RewardInputs(
        completions=completions,
        truth_caption=CAPTIONS[0],
        videos=videos,
        truth_video=truth_video,
    )
    stage1 = stage1_rewards(toy_embedder)
    assert [(f.name, f.segment, f.weight) for f in stage1] == [
        ("r_f", "all", 1.0),
        ("r_t1", "answer", 1.0),
        ("r_v1", "answer", 1.0),
    ]
    r_f, r_t1, r_v1 = (f(inputs) for f in stage1)
    assert r_f.tolist() == [1.0, 0.0, 0.0]
    assert r_t1.tolist() == pytest.approx(caption_rewards(completions, CAPTIONS[0]))
    assert r_t1[0] == pytest.approx(1.0)
    assert r_v1.dtype == torch.float32 and r_v1[0] == pytest.approx(1.0, abs=1e-5)
    assert r_v1.tolist() == pytest.approx(video_rewards(toy_embedder, videos, truth_video))

    anchor = RewardInputs(captions=[CAPTIONS[0]] * 3, videos=videos, truth_video=truth_video)
    r_v2, r_c2 = (f(anchor) for f in stage2_rewards(toy_embedder))
    assert torch.equal(r_v2, r_v1)
    assert r_c2.tolist() == pytest.approx(
        [clip_t(toy_embedder, v, CAPTIONS[0]) for v in videos], abs=1e-5
    )

    with pytest.raises(ValueError, match="reward inputs lack videos, truth_video"):
        stage1[2](RewardInputs(completions=completions))
    broken = RewardFunction("broken", lambda x: [0.0])
    with pytest.raises(ValueError, match="broken: 1 rewards for 3 samples"):
        broken(inputs)
    nan = RewardFunction("nan", lambda x: [0.0, float("nan"), 0.0])
    with pytest.raises(ValueError, match="nan: non-finite rewards"):
        nan(inputs)


# --------------------------------------------------------------------------- reward videos

SETTINGS = VANSSettings(num_reference_frames=2, num_frames=9, height=32, width=32, steps=50)


@pytest.fixture(scope="module")
def renderer():
    return Renderer.tiny(train_text_encoder_tokenizer(toy_corpus()), seed=0)


def test_deduplicate_by_cleaned_prompt():
    captions = ["a red ball", "  a red   ball ", "", "a &amp; b", "a & b", " ", "a red ball"]
    texts, prompts, index = deduplicate(captions)
    assert prompts == ["a red ball", "", "a & b"]
    assert texts == ["a red ball", "", "a &amp; b"]  # the first raw caption of each
    assert index == [0, 0, 1, 2, 2, 1, 0]
    texts, prompts, index = deduplicate(captions, empty_caption="a  red ball")
    assert prompts == ["a red ball", "a & b"] and index == [0, 0, 0, 1, 1, 0, 0]


def test_reward_videos_are_one_by_one_renders_batched_and_deduplicated(renderer):
    captions = [CAPTIONS[0], CAPTIONS[1], f"  {CAPTIONS[0]}", "", CAPTIONS[2], CAPTIONS[1]]
    reference = random_video(7, frames=13, size=(40, 48))
    config = RewardVideoConfig(steps=2, batch_size=3)
    calls = []
    hook = renderer.transformer.register_forward_hook(
        lambda module, args, kwargs, out: calls.append(kwargs["hidden_states"].shape[0]),
        with_kwargs=True,
    )
    try:
        result = render_reward_videos(
            renderer,
            captions,
            reference_frames=reference,
            settings=SETTINGS,
            config=config,
            seed=5,
        )
    finally:
        hook.remove()
    assert result.videos.dtype == torch.uint8 and result.videos.shape == (6, 9, 32, 32, 3)
    assert result.num_unique == 4 and result.index == [0, 1, 0, 2, 3, 1]
    assert result.seconds > 0
    # Unique captions in batches of 3 and 1; two transformer calls per step (CFG 5).
    assert calls == [3, 3] * config.steps + [1, 1] * config.steps
    for i, j in ((0, 2), (1, 5)):
        assert torch.equal(result.videos[i], result.videos[j])

    for slot in range(result.num_unique):
        i = result.index.index(slot)
        single = renderer.render(
            [captions[i]],
            reference_frames=reference,
            num_reference_frames=SETTINGS.num_reference_frames,
            num_frames=SETTINGS.num_frames,
            height=SETTINGS.height,
            width=SETTINGS.width,
            steps=config.steps,
            guidance_scale=SETTINGS.guidance_scale,
            seed=5,
        )[0]
        # Batched matrix products may round differently from batch-1 ones (float32); after
        # denoising and decoding that can move a pixel by one uint8 level (exact here at
        # 32x32; seen at 64x64).
        assert (single.int() - result.videos[i].int()).abs().max() <= 1

    other_seed = render_reward_videos(
        renderer,
        captions[:1],
        reference_frames=reference,
        settings=SETTINGS,
        config=config,
        seed=6,
    )
    assert (other_seed.videos[0].int() - result.videos[0].int()).abs().max() > 1


def test_reward_videos_empty_caption_fallback_and_config(renderer):
    config = RewardVideoConfig(steps=1, batch_size=8, empty_caption=CAPTIONS[2])
    result = render_reward_videos(
        renderer, ["", CAPTIONS[2]], reference_frames=None, settings=SETTINGS, config=config
    )
    assert result.num_unique == 1 and torch.equal(result.videos[0], result.videos[1])
    with pytest.raises(ConfigError, match="steps must be >= 1, got 0; batch_size must be >= 1"):
        RewardVideoConfig(steps=0, batch_size=0)
    with pytest.raises(ValueError, match="captions must be a non-empty list of strings"):
        render_reward_videos(renderer, "a caption", reference_frames=None, settings=SETTINGS)
    with pytest.raises(ValueError, match="num_frames must be 4k\\+1"):
        render_reward_videos(
            renderer,
            ["x"],
            reference_frames=None,
            settings=VANSSettings(num_frames=8, height=32, width=32),
        )
