"""Tests for the reasoner (vans.models.vlm) and its video preprocessing, on a tiny Qwen2.5-VL."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GenerationConfig, PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    smart_resize as reference_smart_resize,
)

from vans.models.errors import CheckpointError
from vans.models.prompting import SYSTEM_PROMPT, VIDEO_PAD, ParsedOutput, build_prompt
from vans.models.tiny import train_reasoner_tokenizer
from vans.models.video_processing import (
    CLIP_STD,
    VIDEO_MAX_PIXELS,
    VIDEO_MIN_PIXELS,
    patchify,
    preprocess_video,
    second_per_grid_t,
    smart_resize,
)
from vans.models.vlm import Reasoner, SamplingConfig

# Qwen2.5-VL-Instruct's chat template (chat_template.json of the released checkpoints), the
# reference `build_prompt` must reproduce.
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

CORPUS = [
    SYSTEM_PROMPT,
    "What will the man do after cutting the onion?",
    "[Think]The man has chopped the onion and the pan is hot.[/Think]"
    "[Ans]He puts the onion into the pan and stirs it.[/Ans]",
    "What happens next if the ball rolls off the table?",
    "[Think]The ball is near the edge.[/Think][Ans]The ball falls to the floor.[/Ans]",
]


def build_test_tokenizer(vocab_size: int = 300) -> PreTrainedTokenizerFast:
    """A byte-level BPE with Qwen's special tokens, trained on a few sentences."""
    return train_reasoner_tokenizer(CORPUS, vocab_size=vocab_size)


@pytest.fixture(scope="module")
def tokenizer():
    return build_test_tokenizer()


# Frames of 84x112 stay 84x112 (multiples of 28, within the bounds): a 6x8 patch grid, i.e.
# 3x4 merged tokens per temporal patch and several attention windows of the tiny tower.
MAX_PIXELS = 112 * 112


def make_reasoner(tokenizer, **kwargs) -> Reasoner:
    return Reasoner.tiny(tokenizer, min_pixels=28 * 28, max_pixels=MAX_PIXELS, **kwargs)


@pytest.fixture
def reasoner(tokenizer):
    return make_reasoner(tokenizer)


def video(num_frames: int = 3, height: int = 84, width: int = 112, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (num_frames, height, width, 3), dtype=torch.uint8, generator=g)


class VisionCounter:
    """Counts the vision tower's calls and the patches it encodes."""

    def __init__(self, reasoner: Reasoner):
        self.patches: list[int] = []
        self.handle = reasoner.model.model.visual.register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        self.patches.append(args[0].shape[0])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# --------------------------------------------------------------------------- preprocessing


def test_smart_resize_rule():
    # Already fine: unchanged.
    assert smart_resize(84, 112, 28, 28 * 28, 10**6) == (84, 112)
    # Nearest multiple of 28 within bounds (338 -> 336, 640 -> 644).
    assert smart_resize(338, 640, 28, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) == (336, 644)
    # Too many pixels: scale down, round down.
    h, w = smart_resize(1080, 1920, 28, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    assert h % 28 == w % 28 == 0 and h * w <= VIDEO_MAX_PIXELS
    assert (h, w) == (560, 1008)
    # Too few: scale up, round up.
    h, w = smart_resize(30, 40, 28, VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS)
    assert h % 28 == w % 28 == 0 and h * w >= VIDEO_MIN_PIXELS
    assert (h, w) == (280, 392)
    with pytest.raises(ValueError):
        smart_resize(10, 2100)


def test_smart_resize_equals_transformers():
    g = torch.Generator().manual_seed(0)
    sizes = [*torch.randint(20, 2000, (300, 2), generator=g).tolist(), [14, 14], [28, 70]]
    for min_pixels, max_pixels in ((VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS), (3136, 12845056)):
        for h, w in sizes:
            assert smart_resize(h, w, 28, min_pixels, max_pixels) == reference_smart_resize(
                h, w, 28, min_pixels, max_pixels
            )


def reference_patches(frame: torch.Tensor, min_pixels: int, max_pixels: int) -> torch.Tensor:
    """transformers' PIL/numpy Qwen2-VL image processor on one (H, W, 3) uint8 frame."""
    processor = Qwen2VLImageProcessorPil(min_pixels=min_pixels, max_pixels=max_pixels)
    out = processor(images=[frame.numpy()], return_tensors="pt")
    return out["pixel_values"], out["image_grid_thw"]


def test_preprocess_matches_transformers_without_resize():
    # The image processor treats an image as a temporal patch of two equal frames, so a video
    # of frame pairs must give, per temporal patch, exactly the image's patches.
    frames = video(6, 84, 112)
    frames[1], frames[3], frames[5] = frames[0], frames[2], frames[4]
    pixels, grid = preprocess_video(frames, min_pixels=28 * 28, max_pixels=10**6)
    assert grid.tolist() == [[3, 6, 8]] and grid.dtype == torch.long
    assert pixels.shape == (3 * 6 * 8, 3 * 2 * 14 * 14) and pixels.dtype == torch.float32
    for t in range(3):
        ref, ref_grid = reference_patches(frames[2 * t], 28 * 28, 10**6)
        assert ref_grid.tolist() == [[1, 6, 8]]
        torch.testing.assert_close(pixels[t * 48 : (t + 1) * 48], ref, atol=1e-5, rtol=0)


def test_preprocess_with_resize_is_close_to_transformers():
    y, x = torch.meshgrid(torch.linspace(0, 1, 70), torch.linspace(0, 1, 100), indexing="ij")
    frame = (torch.stack([x, y, x * y], dim=-1) * 255).round().to(torch.uint8)
    pixels, grid = preprocess_video(torch.stack([frame, frame]), min_pixels=784, max_pixels=10**6)
    ref, ref_grid = reference_patches(frame, 784, 10**6)
    assert grid.tolist() == ref_grid.tolist() == [[1, 4, 8]]  # 70x100 -> 56x112
    assert pixels.shape == ref.shape
    # PIL's and torch's bicubic kernels differ: allow one grey level.
    assert (pixels - ref).abs().max() <= 1.01 / 255 / min(CLIP_STD)
    assert (pixels - ref).abs().mean() < 0.2 / 255 / min(CLIP_STD)


def test_preprocess_respects_pixel_bounds():
    frames = video(2, 338, 640)
    pixels, grid = preprocess_video(frames)  # video defaults: 336x644
    assert grid.tolist() == [[1, 336 // 14, 644 // 14]]
    assert pixels.shape == (24 * 46, 1176)
    _, grid = preprocess_video(frames, min_pixels=784, max_pixels=56 * 56 * 4)
    _, h, w = grid[0].tolist()
    assert h * w * 14 * 14 <= 56 * 56 * 4 and h % 2 == w % 2 == 0


def test_patch_layout_hand_built():
    # Every value names its own (frame, channel, row, column).
    T, C, H, W, p, m, tp = 4, 3, 56, 84, 14, 2, 2
    t, c, y, x = torch.meshgrid(
        torch.arange(T), torch.arange(C), torch.arange(H), torch.arange(W), indexing="ij"
    )
    code = ((t * C + c) * H + y) * W + x
    patches, (gt, gh, gw) = patchify(code.double(), patch_size=p, temporal_patch_size=tp)
    assert (gt, gh, gw) == (2, 4, 6)
    assert patches.shape == (gt * gh * gw, C * tp * p * p)
    row = 0
    for ti in range(gt):
        for hb in range(gh // m):
            for wb in range(gw // m):
                for mr in range(m):
                    for mc in range(m):
                        y0, x0 = (hb * m + mr) * p, (wb * m + mc) * p
                        want = code[ti * tp : (ti + 1) * tp, :, y0 : y0 + p, x0 : x0 + p]
                        # within a patch: channel, frame, pixel row, pixel column
                        want = want.permute(1, 0, 2, 3).reshape(-1).double()
                        assert torch.equal(patches[row], want), row
                        row += 1


def test_odd_frame_count_repeats_the_last_frame():
    frames = torch.stack([torch.full((28, 28, 3), v, dtype=torch.uint8) for v in (0, 100, 200)])
    pixels, grid = preprocess_video(frames, min_pixels=28 * 28, max_pixels=28 * 28)
    assert grid.tolist() == [[2, 2, 2]]
    # Second temporal patch (rows 4..7): both frames are frame 2 (value 200), channel 0.
    expected = (200 / 255 - 0.48145466) / 0.26862954
    values = pixels[4:].reshape(4, 3, 2, 14 * 14)
    torch.testing.assert_close(values[:, 0], torch.full((4, 2, 196), expected))


def test_preprocess_rejects_bad_frames():
    with pytest.raises(ValueError):
        preprocess_video(torch.zeros(2, 28, 28, 3))  # float
    with pytest.raises(ValueError):
        preprocess_video(torch.zeros(2, 3, 28, 28, dtype=torch.uint8))  # channels first
    with pytest.raises(ValueError):
        preprocess_video(torch.zeros(0, 28, 28, 3, dtype=torch.uint8))


def test_second_per_grid_t():
    assert second_per_grid_t(1.0) == 2.0
    assert second_per_grid_t(2.0) == 1.0
    with pytest.raises(ValueError):
        second_per_grid_t(0)


# --------------------------------------------------------------------------- prompt


def test_prompt_matches_qwen_chat_template_and_processor(tokenizer):
    question = "What will the man do after cutting the onion?"
    messages = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": question}]},
    ]
    rendered = tokenizer.apply_chat_template(
        messages, chat_template=QWEN25_VL_CHAT_TEMPLATE, tokenize=False, add_generation_prompt=True
    )
    assert rendered.count(VIDEO_PAD) == 1
    # The processor then repeats the pad once per merged video token.
    grid = (2, 6, 8)
    expanded = rendered.replace(VIDEO_PAD, VIDEO_PAD * (math.prod(grid) // 4))
    assert build_prompt(question, math.prod(grid) // 4) == expanded


def test_prompt_has_one_pad_per_merged_token_and_model_accepts_it(reasoner):
    inputs = reasoner.prepare([video(3), video(5, seed=1)], ["What next?", "And then?"])
    grid = inputs["video_grid_thw"]
    assert grid.tolist() == [[2, 6, 8], [3, 6, 8]]
    pads = (inputs["input_ids"] == reasoner.video_token_id).sum(dim=1)
    assert pads.tolist() == [2 * 6 * 8 // 4, 3 * 6 * 8 // 4]
    assert torch.equal(
        inputs["mm_token_type_ids"] == 2, inputs["input_ids"] == reasoner.video_token_id
    )
    # left padding
    mask = inputs["attention_mask"]
    assert mask[:, -1].all() and not mask[0, 0]
    assert inputs["pixel_values_videos"].shape == (96 + 144, 1176)
    assert inputs["second_per_grid_ts"].tolist() == [2.0, 2.0]
    with torch.no_grad():
        logits = reasoner.model(**inputs).logits
    assert logits.shape == (*inputs["input_ids"].shape, len(reasoner.tokenizer))
    assert torch.isfinite(logits).all()


def test_reasoner_rejects_video_pad_in_question(reasoner):
    with pytest.raises(ValueError, match="video tokens"):
        reasoner.prepare([video()], [f"look {VIDEO_PAD}"])


# --------------------------------------------------------------------------- LoRA, save, load


def test_lora_only_on_language_model(reasoner):
    peft_model = reasoner.add_lora(r=4, alpha=16, dropout=0.1)
    adapted = {
        name.rsplit(".lora_A", 1)[0]
        for name, _ in reasoner.model.named_parameters()
        if ".lora_A" in name
    }
    suffixes = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"]
    suffixes += ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    expected = {f"model.language_model.layers.{i}.{s}" for i in range(2) for s in suffixes}
    assert adapted == expected
    assert not any("lora" in name for name, _ in reasoner.model.model.visual.named_parameters())
    # the vision tower does have gate/up/down projections: they stay plain Linear layers
    assert isinstance(reasoner.model.model.visual.blocks[0].mlp.gate_proj, torch.nn.Linear)
    config = peft_model.peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (4, 16, 0.1)
    layer = reasoner.model.model.language_model.layers[0].self_attn.q_proj
    assert layer.scaling["default"] == 16 / 4
    assert layer.lora_dropout["default"].p == 0.1
    trainable = [n for n, p in reasoner.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    # the model was in eval mode, so are the new LoRA dropouts
    assert not any(m.training for m in reasoner.model.modules())
    with pytest.raises(ValueError):
        reasoner.add_lora()


def test_lora_defaults_are_the_papers(reasoner):
    config = reasoner.add_lora().peft_config["default"]
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 32, 0.05)


def _logits(reasoner: Reasoner, frames: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reasoner.model(**reasoner.prepare([frames], ["What next?"])).logits


def test_save_load_round_trip(reasoner, tmp_path):
    reasoner.fps = 2.0
    frames = video()
    reasoner.save_pretrained(tmp_path / "vlm")
    assert (tmp_path / "vlm" / "model.safetensors").is_file()
    loaded = Reasoner.from_pretrained(tmp_path / "vlm")
    assert (loaded.fps, loaded.min_pixels, loaded.max_pixels) == (2.0, 28 * 28, MAX_PIXELS)
    assert loaded.peft_model is None and not loaded.model.training
    assert loaded.tokenizer.get_vocab() == reasoner.tokenizer.get_vocab()
    assert torch.equal(_logits(loaded, frames), _logits(reasoner, frames))
    assert Reasoner.from_pretrained(tmp_path / "vlm", fps=1.0).fps == 1.0


def test_save_load_round_trip_with_lora(reasoner, tmp_path):
    frames = video()
    base = _logits(reasoner, frames)
    reasoner.add_lora()
    with torch.no_grad():  # LoRA B starts at zero: give the adapter an effect
        for name, param in reasoner.model.named_parameters():
            if ".lora_B" in name:
                param.normal_(std=0.5)
    adapted = _logits(reasoner, frames)
    assert not torch.allclose(adapted, base)
    reasoner.save_pretrained(tmp_path / "vlm")
    assert (tmp_path / "vlm" / "lora" / "adapter_model.safetensors").is_file()

    plain = Reasoner.from_pretrained(tmp_path / "vlm")  # base weights saved without LoRA
    assert torch.equal(_logits(plain, frames), base)
    loaded = Reasoner.from_pretrained(tmp_path / "vlm", lora=tmp_path / "vlm" / "lora")
    assert torch.equal(_logits(loaded, frames), adapted)
    assert not any(p.requires_grad for p in loaded.model.parameters())
    trainable = Reasoner.from_pretrained(
        tmp_path / "vlm", lora=tmp_path / "vlm" / "lora", trainable_lora=True
    )
    names = [n for n, p in trainable.model.named_parameters() if p.requires_grad]
    assert names and all(".lora_" in n for n in names)


def test_checkpoint_errors(reasoner, tmp_path):
    with pytest.raises(CheckpointError, match="no such"):
        Reasoner.from_pretrained(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        Reasoner.from_pretrained(tmp_path / "empty")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        Reasoner.from_pretrained(tmp_path / "file")

    saved = reasoner.save_pretrained(tmp_path / "vlm")
    with pytest.raises(CheckpointError, match="LoRA"):
        Reasoner.from_pretrained(saved, lora=tmp_path / "empty")
    (saved / "model.safetensors").rename(tmp_path / "weights")
    with pytest.raises(CheckpointError, match="weights"):
        Reasoner.from_pretrained(saved)
    (tmp_path / "weights").rename(saved / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (saved / name).rename(tmp_path / name)
    with pytest.raises(CheckpointError, match="tokenizer"):
        Reasoner.from_pretrained(saved)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (tmp_path / name).rename(saved / name)

    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "model_type": "llama"}))
    with pytest.raises(CheckpointError):
        Reasoner.from_pretrained(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        Reasoner.from_pretrained(saved)


def test_sampling_config_validation():
    SamplingConfig(temperature=0.0, do_sample=False)
    for bad in ({"temperature": 0.0}, {"top_p": 0.0}, {"top_k": -1}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            SamplingConfig(**bad)


# --------------------------------------------------------------------------- generation

SHORT = SamplingConfig(max_new_tokens=12)


def test_generate_shapes_and_determinism(reasoner):
    frames = video()
    questions = ["What next?", "What will the man do after cutting the onion?"]
    state = torch.random.get_rng_state()
    first = reasoner.generate(frames, questions, num_samples=3, sampling=SHORT, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is untouched
    assert len(first) == 2 and all(len(group) == 3 for group in first)
    assert all(isinstance(text, str) for group in first for text in group)
    assert reasoner.generate(frames, questions, num_samples=3, sampling=SHORT, seed=7) == first
    other = reasoner.generate(frames, questions, num_samples=3, sampling=SHORT, seed=8)
    assert other != first
    assert len({text for group in first for text in group}) > 1  # samples differ

    groups = reasoner.generate_completions(frames, questions, num_samples=2, sampling=SHORT, seed=0)
    for group in groups:
        for c in group:
            assert 1 <= len(c.token_ids) <= SHORT.max_new_tokens
            assert c.finished == (c.token_ids[-1].item() in (reasoner.im_end_id, reasoner.pad_id))
            assert c.text == reasoner.tokenizer.decode(c.token_ids, skip_special_tokens=True)
            assert "<|" not in c.text


def test_greedy_samples_are_identical_and_training_mode_is_restored(reasoner):
    reasoner.model.train()
    greedy = SamplingConfig(do_sample=False, max_new_tokens=8)
    out = reasoner.generate(video(), ["What next?"], num_samples=3, sampling=greedy)
    assert len(set(out[0])) == 1 and len(out[0]) == 3
    assert reasoner.model.training


def test_group_generation_encodes_the_video_once(reasoner):
    frames = video(3)
    n_patches = 2 * 6 * 8
    with VisionCounter(reasoner) as counter:
        out = reasoner.generate(
            frames, ["What next?", "And then?"], num_samples=4, sampling=SHORT, seed=0
        )
    assert counter.patches == [n_patches]
    assert [len(g) for g in out] == [4, 4]


def test_shared_video_generation_equals_transformers_standard_path(reasoner):
    # Same greedy answers as transformers' usual route: pixel values once per prompt, the
    # vision tower run over all copies.
    frames = video(3)
    questions = ["What next?", "What happens next if the ball rolls off the table?"]
    greedy = SamplingConfig(do_sample=False, max_new_tokens=10)
    ours = reasoner.generate_completions(frames, questions, sampling=greedy)
    inputs = reasoner.prepare([frames, frames], questions)
    with torch.no_grad(), VisionCounter(reasoner) as counter:
        out = reasoner.model.generate(
            **inputs, generation_config=reasoner._generation_config(greedy, 1)
        )
    assert counter.patches == [2 * 96]  # the standard route encodes the video twice
    for q, row in enumerate(out[:, inputs["input_ids"].shape[1] :]):
        ids = ours[q][0].token_ids
        assert torch.equal(row[: len(ids)], ids)


def test_one_prefill_per_group_samples_what_repeated_prompts_sample(reasoner):
    """The G samples of a prompt decode from one prefill of it (the language model reads
    each prompt once, then one token per row and step), and for a seed they are the
    answers of the formulation it replaced: transformers' `generate` with
    `num_return_sequences=G`, which prefills every prompt G times."""
    frames = video(3)
    questions = ["What next?", "What happens next if the ball rolls off the table?"]
    sampling = SamplingConfig(max_new_tokens=12)
    shapes = []
    hook = reasoner.model.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: shapes.append(tuple(kwargs["inputs_embeds"].shape[:2])),
        with_kwargs=True,
    )
    try:
        ours = reasoner.generate_completions(
            frames, questions, num_samples=4, sampling=sampling, seed=5
        )
    finally:
        hook.remove()
    inputs = reasoner.prepare([frames, frames], questions)
    prompt_len = inputs["input_ids"].shape[1]
    assert shapes[0] == (2, prompt_len - 1)  # one prefill of the two prompts
    assert all(length == 1 and rows == 8 for rows, length in shapes[1:])
    with torch.no_grad(), reasoner._seeded(5):
        out = reasoner.model.generate(
            **inputs, generation_config=reasoner._generation_config(sampling, 4)
        )
    expected = [reasoner._completion(row) for row in out[:, prompt_len:]]
    got = [c for group in ours for c in group]
    assert [c.token_ids.tolist() for c in got] == [c.token_ids.tolist() for c in expected]
    assert len({tuple(c.token_ids.tolist()) for c in got}) > 1  # real samples, not copies


def test_predict_returns_parsed_outputs(reasoner):
    out = reasoner.predict(video(), ["What next?", "And then?"], SHORT, seed=0)
    assert len(out) == 2 and all(isinstance(p, ParsedOutput) for p in out)


# --------------------------------------------------------------------------- log-probs


def reference_logprobs(reasoner: Reasoner, frames, question, ids: list[int], temperature=1.0):
    """Score one completion alone with a plain forward that feeds `pixel_values_videos`."""
    inputs = reasoner.prepare([frames], [question])
    prompt_len = inputs["input_ids"].shape[1]
    inputs["input_ids"] = torch.cat([inputs["input_ids"], torch.tensor([ids])], dim=1)
    inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
    inputs["mm_token_type_ids"] = reasoner._token_types(inputs["input_ids"])
    logits = reasoner.model(**inputs).logits[0, prompt_len - 1 : -1] / temperature
    logits[:, reasoner.placeholder_ids] = -torch.inf  # the reasoner never writes them
    return torch.log_softmax(logits.double(), dim=-1)[torch.arange(len(ids)), torch.tensor(ids)]


def test_completion_logprobs_match_reference_and_run_the_vision_tower(reasoner):
    reasoner.add_lora()
    frames, question = video(3), "What will the man do after cutting the onion?"
    completions = [
        "[Think]The pan is hot.[/Think][Ans]He puts the onion into the pan.[/Ans]",
        "[Ans]The ball falls.[/Ans]",
        "",
    ]
    for p in reasoner.model.model.visual.parameters():
        p.requires_grad_(True)
    with VisionCounter(reasoner) as counter:
        logprobs, mask = reasoner.completion_logprobs(frames, question, completions)
    assert counter.patches == [2 * 6 * 8]  # once, inside this call, for all completions
    tok = reasoner.tokenizer
    lengths = [len(tok(c, add_special_tokens=False)["input_ids"]) + 1 for c in completions]
    assert mask.dtype == torch.bool and mask.sum(dim=1).tolist() == lengths
    assert logprobs.shape == mask.shape == (3, max(lengths))
    assert (logprobs[~mask] == 0).all() and (logprobs[mask] < 0).all()

    # gradients reach the LoRA adapters and the vision tower
    logprobs[mask].sum().backward()
    visual_grad = reasoner.model.model.visual.patch_embed.proj.weight.grad
    lora_grad = (
        reasoner.model.model.language_model.layers[0].self_attn.q_proj.lora_A["default"].weight.grad
    )
    assert visual_grad is not None and visual_grad.abs().sum() > 0
    assert lora_grad is not None

    with torch.no_grad():
        for i, text in enumerate(completions):
            ids = [*tok(text, add_special_tokens=False)["input_ids"], reasoner.im_end_id]
            ref = reference_logprobs(reasoner, frames, question, ids)
            torch.testing.assert_close(logprobs[i, : len(ids)].double(), ref, atol=1e-5, rtol=0)


def test_sampled_logprobs_equal_the_samplers(reasoner):
    # The checkpoint's generation_config must not leak into sampling (Qwen2.5-VL-Instruct
    # ships a repetition penalty and top-k 1): log-probs recomputed for training must be
    # those of the distribution the tokens were drawn from.
    reasoner.model.generation_config = GenerationConfig(
        bos_token_id=reasoner.pad_id,
        eos_token_id=[reasoner.im_end_id, reasoner.pad_id],
        pad_token_id=reasoner.pad_id,
        do_sample=True,
        repetition_penalty=1.05,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )
    frames, question = video(3), "What next?"
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=10)
    step_logits: list[torch.Tensor] = []
    hook = reasoner.model.lm_head.register_forward_hook(
        lambda m, a, out: step_logits.append(out[:, -1].detach())
    )
    try:
        group = reasoner.generate_completions(
            frames, [question], num_samples=3, sampling=sampling, seed=3
        )[0]
    finally:
        hook.remove()
    # The sampler's distribution: the placeholder tokens suppressed, then the temperature.
    stacked = torch.stack(step_logits, dim=1).double()
    stacked[..., reasoner.placeholder_ids] = -torch.inf
    sampler = torch.log_softmax(stacked / 0.7, dim=-1)
    with torch.no_grad():
        logprobs, mask = reasoner.completion_logprobs(
            frames, question, [c.token_ids for c in group], temperature=0.7
        )
    for g, c in enumerate(group):
        n = len(c.token_ids)
        assert mask[g].sum() == n
        expected = sampler[g, torch.arange(n), c.token_ids]
        torch.testing.assert_close(logprobs[g, :n].double(), expected, atol=1e-5, rtol=0)

    # Greedy answers pick the argmax at every step.
    greedy = reasoner.generate_completions(
        frames, [question], sampling=SamplingConfig(do_sample=False, max_new_tokens=10)
    )[0][0]
    ids = greedy.token_ids.tolist()
    with torch.no_grad():
        ref = reference_logprobs(reasoner, frames, question, ids)
        inputs = reasoner.prepare([frames], [question])
        prompt_len = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], greedy.token_ids[None]], dim=1)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        inputs["mm_token_type_ids"] = reasoner._token_types(inputs["input_ids"])
        logits = reasoner.model(**inputs).logits[0, prompt_len - 1 : -1]
    assert logits.argmax(dim=-1).tolist() == ids
    assert torch.isfinite(ref).all()


def test_sequence_logprobs_batch_of_different_videos(reasoner):
    a, b = video(3, seed=1), video(5, seed=2)
    with VisionCounter(reasoner) as counter, torch.no_grad():
        logprobs, mask = reasoner.sequence_logprobs(
            [a, b, a], ["q one", "q two", "q three"], ["[Ans]x[/Ans]", "y", "[Ans]z[/Ans]"]
        )
    assert counter.patches == [96 + 144]  # a once, b once, one call
    for i, (frames, q, text) in enumerate(
        [(a, "q one", "[Ans]x[/Ans]"), (b, "q two", "y"), (a, "q three", "[Ans]z[/Ans]")]
    ):
        ids = [*reasoner.tokenizer(text, add_special_tokens=False)["input_ids"], reasoner.im_end_id]
        with torch.no_grad():
            ref = reference_logprobs(reasoner, frames, q, ids)
        torch.testing.assert_close(logprobs[i, : len(ids)].double(), ref, atol=1e-5, rtol=0)
        assert mask[i].sum() == len(ids)


def test_logprobs_of_nothing(reasoner):
    logprobs, mask = reasoner.completion_logprobs(video(), "q", [])
    assert logprobs.shape == mask.shape == (0, 0)
    logprobs, mask = reasoner.completion_logprobs(
        video(), "q", [[], torch.tensor([], dtype=torch.long)]
    )
    assert logprobs.shape == (2, 0)


def test_tiny_requires_qwen_special_tokens():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["hello"], trainers.BpeTrainer(vocab_size=50, special_tokens=["<|im_end|>"])
    )
    with pytest.raises(ValueError, match=re.escape("<|endoftext|>")):
        Reasoner.tiny(PreTrainedTokenizerFast(tokenizer_object=tok))


def test_vision_placeholders_are_never_sampled(reasoner):
    """Even when the model prefers <|video_pad|> above all, sampling never writes a vision
    placeholder (it would break the next forward), and log-probs exclude them."""
    pad = reasoner.video_token_id
    assert pad in reasoner.placeholder_ids and len(reasoner.placeholder_ids) == 4
    with torch.no_grad():
        reasoner.model.lm_head.weight[pad] *= 1000  # its logit dwarfs every other token's
    frames = video(3)
    group = reasoner.generate_completions(
        frames, ["What next?"], num_samples=4, sampling=SamplingConfig(max_new_tokens=6), seed=0
    )[0]
    sampled = torch.cat([c.token_ids for c in group]).tolist()
    assert not set(sampled) & set(reasoner.placeholder_ids)
    with torch.no_grad():
        logprobs, mask = reasoner.completion_logprobs(
            frames, "What next?", [c.token_ids for c in group]
        )
    assert torch.isfinite(logprobs[mask]).all()
