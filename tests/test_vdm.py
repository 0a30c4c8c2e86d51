"""Tests for the Wan2.1 renderer (vans.models.vdm) on tiny random models.

Conformance: with no reference frames the renderer must reproduce diffusers' WanPipeline
built from the same components.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler, WanPipeline
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from vans.errors import VansError
from vans.models.errors import CheckpointError
from vans.models.flow_matching import euler_step, set_schedule
from vans.models.vdm import Renderer, reference_indices

SIZE = dict(num_frames=9, height=32, width=32)  # 3 latent frames of 4x4
NEGATIVE = "blurry, static"
CAPTIONS = ["a red ball rolls to the left", "the cat jumps over a blue box"]


def make_tokenizer() -> PreTrainedTokenizerFast:
    """A word-level tokenizer with umT5's special-token layout (pad 0, eos 1, unk 2)."""
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    corpus = [*CAPTIONS, NEGATIVE, "a person cuts the onion then stirs the pan"]
    tok.train_from_iterator(
        corpus, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"])
    )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )


@pytest.fixture(scope="module")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="module")
def renderer(tokenizer):
    return Renderer.tiny(tokenizer, seed=0)


@pytest.fixture(scope="module")
def saved(renderer, tmp_path_factory):
    return renderer.save_pretrained(tmp_path_factory.mktemp("vdm") / "wan")


def video(seed: int, t: int = 17, h: int = 40, w: int = 48) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (t, h, w, 3), generator=g, dtype=torch.uint8)


def pipeline_for(renderer: Renderer) -> WanPipeline:
    pipe = WanPipeline(
        tokenizer=renderer.tokenizer,
        text_encoder=renderer.text_encoder,
        vae=renderer.vae,
        transformer=renderer.transformer,
        scheduler=renderer.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


SCHEDULERS = {
    "euler": lambda: FlowMatchEulerDiscreteScheduler(shift=5.0),
    "unipc": lambda: UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0
    ),
}


# ---------------------------------------------------------------- conformance


@pytest.mark.parametrize(
    ("scheduler", "guidance"), [("euler", 5.0), ("unipc", 5.0), ("euler", 1.0)]
)
def test_text_to_video_matches_wan_pipeline(tokenizer, scheduler, guidance):
    r = Renderer.tiny(tokenizer, seed=1)
    r.scheduler = SCHEDULERS[scheduler]()
    pipe = pipeline_for(r)
    common = dict(negative_prompt=NEGATIVE, num_inference_steps=3, guidance_scale=guidance, **SIZE)

    latents = r.generate_latents(
        CAPTIONS, negative_prompt=NEGATIVE, steps=3, guidance_scale=guidance, seed=7, **SIZE
    )
    expected = pipe(
        CAPTIONS, generator=torch.Generator().manual_seed(7), output_type="latent", **common
    ).frames
    assert latents.shape == expected.shape == (2, 16, 3, 4, 4)
    assert latents.std() > 0.1  # a real signal, not a constant
    assert (latents - expected).abs().max().item() < 1e-4

    video = r.decode_latents(latents)  # (B, 3, T, H, W) in [-1, 1]
    expected_video = pipe(
        CAPTIONS, generator=torch.Generator().manual_seed(7), output_type="pt", **common
    ).frames  # (B, T, 3, H, W) in [0, 1]
    ours = (video / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4)
    assert ours.shape == expected_video.shape == (2, 9, 3, 32, 32)
    assert (ours - expected_video).abs().max().item() < 1e-4

    frames = r.render(
        CAPTIONS, negative_prompt=NEGATIVE, steps=3, guidance_scale=guidance, seed=7, **SIZE
    )
    expected_np = pipe(
        CAPTIONS, generator=torch.Generator().manual_seed(7), output_type="np", **common
    ).frames
    assert frames.dtype == torch.uint8 and frames.shape == (2, 9, 32, 32, 3)
    expected_u8 = np.round(expected_np * 255).astype(np.int16)
    assert np.abs(frames.numpy().astype(np.int16) - expected_u8).max() <= 1


def test_prompt_embeddings_match_wan_pipeline(renderer):
    pipe = pipeline_for(renderer)
    prompts = ["  a red &amp; ball\n rolls ", "the cat"]
    with torch.no_grad():  # as in WanPipeline.__call__ (grad mode changes kernels)
        expected, _ = pipe.encode_prompt(
            prompts, do_classifier_free_guidance=False, max_sequence_length=512
        )
    ours = renderer.encode_prompts(prompts)
    assert ours.shape == expected.shape == (2, 512, 32)
    assert torch.equal(ours, expected)
    assert ours[1, 3:].abs().sum() == 0  # "the cat </s>": zero past the true length


# ---------------------------------------------------------------- reference conditioning


def test_reference_indices():
    assert reference_indices(9, 6) == [0, 1, 3, 4, 6, 8]
    assert reference_indices(5, 6) == [0, 0, 1, 2, 3, 4]
    assert reference_indices(1, 6) == [0] * 6  # a single image is a static clip
    assert reference_indices(7, 1) == [0]
    assert reference_indices(7, 0) == []
    for t in range(1, 40):
        for n in range(1, 9):
            expected = np.floor(np.linspace(0, t - 1, n)).astype(int).tolist()
            assert reference_indices(t, n) == expected
    with pytest.raises(ValueError):
        reference_indices(9, -1)


def test_reference_latents_picks_linspace_frames():
    latents = torch.arange(9.0).view(1, 1, 9, 1, 1).expand(1, 16, 9, 2, 2)
    picked = Renderer.reference_latents(latents, 6)
    assert picked.shape == (1, 16, 6, 2, 2)
    assert picked[0, 0, :, 0, 0].tolist() == [0, 1, 3, 4, 6, 8]
    assert Renderer.reference_latents(latents, 0) is None


def test_encode_video_shapes_and_normalisation(renderer):
    frames = video(0, t=17, h=32, w=48)
    z = renderer.encode_video(frames)
    assert z.shape == (1, 16, 5, 4, 6) and z.dtype == torch.float32
    # The inverse of WanPipeline's un-normalisation: decoding sees z * std + mean.
    raw = renderer.vae.encode(frames.permute(3, 0, 1, 2)[None].float() / 255 * 2 - 1)
    mean, inv_std = renderer._latent_stats(z)
    torch.testing.assert_close(z / inv_std + mean, raw.latent_dist.mode(), atol=1e-5, rtol=1e-5)
    # Frames past 4(T'-1)+1 are not used by the VAE.
    assert torch.equal(renderer.encode_video(torch.cat([frames, frames[:2]])), z)
    with pytest.raises(ValueError, match="uint8"):
        renderer.encode_video(frames.float())


def test_reference_conditioning_reaches_the_transformer(renderer):
    seen = []

    def hook(module, args, kwargs):
        seen.append((kwargs["hidden_states"].shape, kwargs["timestep"].clone()))

    handle = renderer.transformer.register_forward_pre_hook(hook, with_kwargs=True)
    steps_done = []
    try:
        out = renderer.render(
            CAPTIONS[:1],
            reference_frames=video(0),  # 17 frames -> 5 latent frames, resized 40x48 -> 32x32
            num_reference_frames=6,
            steps=2,
            seed=3,
            progress=lambda done, total: steps_done.append((done, total)),
            **SIZE,
        )
    finally:
        handle.remove()
    assert out.shape == (1, 9, 32, 32, 3) and out.dtype == torch.uint8
    assert len(seen) == 4  # 2 steps x (cond, uncond)
    for shape, timestep in seen:
        assert shape == (1, 16, 6 + 3, 4, 4)  # n reference + T' noisy frames
        assert timestep.numel() == 1  # one timestep for every token
    assert steps_done == [(1, 2), (2, 2)]


def test_reference_changes_output_and_is_deterministic(renderer):
    kwargs = dict(num_reference_frames=6, steps=2, seed=5, **SIZE)
    a = renderer.generate_latents(CAPTIONS[:1], reference_frames=video(1), **kwargs)
    a2 = renderer.generate_latents(CAPTIONS[:1], reference_frames=video(1), **kwargs)
    b = renderer.generate_latents(CAPTIONS[:1], reference_frames=video(2), **kwargs)
    none = renderer.generate_latents(CAPTIONS[:1], reference_frames=None, **kwargs)
    zero = renderer.generate_latents(
        CAPTIONS[:1], reference_frames=video(1), **{**kwargs, "num_reference_frames": 0}
    )
    assert torch.equal(a, a2)
    assert (a - b).abs().max() > 1e-3
    assert (a - none).abs().max() > 1e-3
    assert torch.equal(none, zero)  # n = 0 ignores the video


def test_multi_future_batch_encodes_the_video_once(renderer, monkeypatch):
    calls = []
    encode = renderer.vae.encode

    def counting_encode(*args, **kwargs):
        calls.append(args[0].shape)
        return encode(*args, **kwargs)

    monkeypatch.setattr(renderer.vae, "encode", counting_encode)
    ref = video(4)
    kwargs = dict(reference_frames=ref, num_reference_frames=6, steps=2, seed=9, **SIZE)
    both = renderer.render(CAPTIONS, **kwargs)
    assert len(calls) == 1 and calls[0][0] == 1
    assert both.shape == (2, 9, 32, 32, 3)
    assert torch.equal(renderer.render(CAPTIONS, **kwargs), both)
    assert not torch.equal(both[0], both[1])  # different captions, different videos
    # The batch draws one (B, ...) noise tensor; its first row is the noise of a batch of
    # one, so caption 0 alone matches row 0 (up to batched-matmul round-off).
    alone = renderer.generate_latents(CAPTIONS[:1], **kwargs)
    batched = renderer.generate_latents(CAPTIONS, **kwargs)
    torch.testing.assert_close(alone[0], batched[0], atol=1e-4, rtol=0)


def test_predict_velocity_drops_reference_and_applies_cfg(renderer):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 3, 4, 4, generator=g)
    reference = torch.randn(1, 16, 2, 4, 4, generator=g)
    cond = renderer.encode_prompts(CAPTIONS, max_sequence_length=16)
    uncond = renderer.encode_prompts([NEGATIVE], max_sequence_length=16)
    t = torch.tensor(500.0)
    v = renderer.predict_velocity(latents, t, cond, uncond, 4.0, reference)
    assert v.shape == latents.shape and v.dtype == torch.float32

    def raw(embeds):
        hidden = torch.cat([reference.expand(2, -1, -1, -1, -1), latents], dim=2)
        out = renderer.transformer(
            hidden, t.expand(2), embeds.expand(2, -1, -1), return_dict=False
        )[0]
        return out[:, :, 2:]

    with torch.no_grad():
        expected = raw(uncond) + 4.0 * (raw(cond) - raw(uncond))
    torch.testing.assert_close(v.detach(), expected, atol=1e-5, rtol=1e-5)
    # Without guidance: one call, the conditional prediction; gradients flow.
    latents.requires_grad_(True)
    v1 = renderer.predict_velocity(latents, t, cond, None, 1.0, reference)
    v1.sum().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="negative_embeds"):
        renderer.predict_velocity(latents, t, cond, None, 5.0)


def test_euler_step_matches_flow_match_scheduler():
    scheduler = FlowMatchEulerDiscreteScheduler(shift=5.0)
    schedule = set_schedule(scheduler, 4)
    assert len(schedule.sigmas) == len(schedule) + 1 == 5
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 16, 2, 4, 4, generator=g), torch.randn(1, 16, 2, 4, 4, generator=g)
    for i, t in enumerate(schedule.timesteps):
        ours = euler_step(x, v, i, schedule)
        theirs = scheduler.step(v, t, x, return_dict=False)[0]
        assert torch.equal(ours, theirs)
        x = ours


# ---------------------------------------------------------------- save / load


def test_tiny_is_seeded(tokenizer):
    state = torch.random.get_rng_state()
    a, b, c = (Renderer.tiny(tokenizer, seed=s) for s in (0, 0, 1))
    assert torch.equal(torch.random.get_rng_state(), state)  # global RNG untouched
    pa, pb, pc = (torch.cat([p.flatten() for p in r.transformer.parameters()]) for r in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)
    assert a.text_encoder.config.vocab_size == len(tokenizer)
    assert not a.text_encoder.training  # dropout off: deterministic prompt embeddings


def test_save_load_round_trip(renderer, saved):
    loaded = Renderer.from_pretrained(saved)
    for name in ("transformer", "vae", "text_encoder"):
        ours, theirs = getattr(renderer, name).state_dict(), getattr(loaded, name).state_dict()
        assert ours.keys() == theirs.keys()
        for key in ours:
            assert torch.equal(ours[key], theirs[key]), f"{name}.{key}"
    assert loaded.tokenizer(CAPTIONS).input_ids == renderer.tokenizer(CAPTIONS).input_ids
    assert type(loaded.scheduler) is type(renderer.scheduler)

    def public(config):
        return {k: v for k, v in config.items() if not k.startswith("_")}

    assert public(loaded.scheduler.config) == public(renderer.scheduler.config)
    kwargs = dict(reference_frames=video(6), num_reference_frames=2, steps=2, seed=1, **SIZE)
    assert torch.equal(
        loaded.render(CAPTIONS[:1], **kwargs), renderer.render(CAPTIONS[:1], **kwargs)
    )


def test_saved_directory_loads_in_wan_pipeline(saved):
    pipe = WanPipeline.from_pretrained(saved, local_files_only=True)
    assert isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler)


# ---------------------------------------------------------------- errors


def test_missing_parts_raise_checkpoint_error(saved, tmp_path):
    assert issubclass(CheckpointError, VansError)
    with pytest.raises(CheckpointError, match="no such directory"):
        Renderer.from_pretrained(tmp_path / "nope")

    partial = tmp_path / "partial"
    shutil.copytree(saved, partial)
    shutil.rmtree(partial / "vae")
    shutil.rmtree(partial / "tokenizer")
    with pytest.raises(CheckpointError, match=r"missing vae/, tokenizer/.*transformer/"):
        Renderer.from_pretrained(partial)

    no_weights = tmp_path / "no_weights"
    shutil.copytree(saved, no_weights)
    for f in (no_weights / "transformer").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(CheckpointError, match=r"transformer: no weights"):
        Renderer.from_pretrained(no_weights)

    corrupt = tmp_path / "corrupt"
    shutil.copytree(saved, corrupt)
    (corrupt / "text_encoder" / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="text_encoder: cannot load"):
        Renderer.from_pretrained(corrupt)

    empty = tmp_path / "empty"
    for name in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        (empty / name).mkdir(parents=True)
    with pytest.raises(CheckpointError, match=r"no config\.json"):
        Renderer.from_pretrained(empty)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_frames=10), "4k\\+1"),
        (dict(height=40), "multiples of 16"),
        (dict(width=8), "multiples of 16"),
        (dict(num_reference_frames=-1), "num_reference_frames"),
        (dict(steps=0), "steps"),
        (dict(captions=[]), "non-empty"),
        (dict(captions=["ok", None]), "must be a string"),
        (dict(captions="a bare string"), "list"),
    ],
)
def test_invalid_render_arguments(renderer, kwargs, match):
    args = dict(captions=CAPTIONS[:1], steps=1, **SIZE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        renderer.render(args.pop("captions"), **args)
