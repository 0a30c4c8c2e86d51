"""The "official" inference profile: the VANS authors' released inference (docs/official.md).

The schedule and the sampling loop are checked against a transcription of the authors' code
(DiffSynth's `FlowMatchScheduler(shift=5, sigma_min=0.0, extra_one_step=True)` and the
denoising loop of their `wan_video_new.py`), run on the same tiny diffusers transformer.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
import torch

from test_pipeline import toy_video  # noqa: F401  (fixture)
from test_vdm import make_tokenizer
from vans.cli.main import run
from vans.errors import ConfigError
from vans.models.checkpoint import TINY_SETTINGS, VANSSettings
from vans.models.flow_matching import diffsynth_schedule
from vans.models.pipeline import VANSPipeline, load_input
from vans.models.profiles import OFFICIAL, PROFILES, apply_profile
from vans.models.vdm import Renderer, RenderSettings
from vans.models.video_processing import second_per_grid_t


def authors_schedule(steps: int, shift: float) -> tuple[torch.Tensor, torch.Tensor]:
    """DiffSynth's FlowMatchScheduler.set_timesteps with sigma_min 0, extra_one_step, as
    transcribed from their code: (sigmas, timesteps), the step going to 0 after the last."""
    sigma_min, sigma_max, denoising_strength = 0.0, 1.0, 1.0
    sigma_start = sigma_min + (sigma_max - sigma_min) * denoising_strength
    sigmas = torch.linspace(sigma_start, sigma_min, steps + 1)[:-1]
    sigmas = shift * sigmas / (1 + (shift - 1) * sigmas)
    return sigmas, sigmas * 1000


def authors_step(sigmas, timesteps, model_output, timestep, sample) -> torch.Tensor:
    timestep_id = torch.argmin((timesteps - timestep).abs())
    sigma = sigmas[timestep_id]
    sigma_ = 0 if timestep_id + 1 >= len(timesteps) else sigmas[timestep_id + 1]
    return sample + model_output * (sigma_ - sigma)


def test_schedule_is_the_authors() -> None:
    ours = diffsynth_schedule(50, 5.0)
    sigmas, timesteps = authors_schedule(50, 5.0)
    assert torch.equal(ours.sigmas[:-1], sigmas) and ours.sigmas[-1] == 0
    assert torch.equal(ours.timesteps, timesteps)
    # By hand: s = 0.02 at the last step, sigma = 5 * 0.02 / (1 + 4 * 0.02).
    assert ours.sigmas[-2].item() == pytest.approx(0.1 / 1.08, abs=1e-7)
    assert ours.sigmas[0] == 1 and len(ours) == 50


def test_bfloat16_timesteps_round_the_model_input_only() -> None:
    plain = diffsynth_schedule(50, 5.0)
    rounded = diffsynth_schedule(50, 5.0, timestep_dtype=torch.bfloat16)
    assert torch.equal(rounded.sigmas, plain.sigmas)
    assert torch.equal(rounded.timesteps, plain.timesteps.to(torch.bfloat16).float())
    assert not torch.equal(rounded.timesteps, plain.timesteps)
    # Near t = 1000 bfloat16 is 4 apart, as far as the first steps are: t_1 = 995.9 -> 996.
    assert rounded.timesteps[1].item() == 996.0


def test_sampler_matches_a_transcription_of_the_authors_loop() -> None:
    renderer = Renderer.tiny(make_tokenizer(), seed=0)
    renderer.set_shift(5.0)  # the checkpoint's shift is the grid's
    settings = RenderSettings(
        num_frames=9, height=32, width=32, steps=6, guidance_scale=5.0,
        negative_prompt="blurry, static", sampler="euler", timestep_dtype="bfloat16",
    )  # fmt: skip
    frames = torch.randint(
        0, 256, (9, 32, 32, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1)
    )
    caption = "a red ball rolls to the left"
    cond = renderer.encode_conditioning([caption], settings, reference_frames=frames)
    noise = renderer.initial_noise(1, 9, 32, 32, seed=4)
    ours = renderer.generate_latents(
        [caption], settings=settings, reference_frames=frames, latents=noise
    )

    # Their loop: the references in front of the latents at every step, one timestep rounded
    # to bf16 for the model, CFG, their scheduler step on everything, the references dropped.
    sigmas, timesteps = authors_schedule(6, 5.0)
    transformer, latents, refs = renderer.transformer, noise.clone(), cond.reference
    with torch.no_grad():
        for progress_id, timestep in enumerate(timesteps):
            t = timestep.unsqueeze(0).to(torch.bfloat16)
            latents = torch.cat([refs, latents], dim=2)

            def model(embeds, t=t, latents=latents):
                return transformer(hidden_states=latents, timestep=t.float(),
                                   encoder_hidden_states=embeds, return_dict=False)[0]  # fmt: skip

            posi, nega = model(cond.prompt_embeds), model(cond.negative_embeds)
            noise_pred = nega + 5.0 * (posi - nega)
            latents = authors_step(sigmas, timesteps, noise_pred, timesteps[progress_id], latents)
            latents = latents[:, :, refs.shape[2] :]
    assert (ours - latents).abs().max().item() == 0


def test_sampler_settings_are_checked() -> None:
    renderer = Renderer.tiny(make_tokenizer(), seed=0)
    bad = RenderSettings(num_frames=9, height=32, width=32, steps=2, sampler="ddim")
    with pytest.raises(ValueError, match="sampler must be one of"):
        renderer.render(["a"], settings=bad)
    with pytest.raises(ValueError, match="timestep_dtype needs sampler: euler"):
        renderer.render(
            ["a"], settings=replace(bad, sampler="scheduler", timestep_dtype="bfloat16")
        )
    problems = replace(VANSSettings(), timestep_dtype="int8", vlm_frames=1).problems()
    assert any("timestep_dtype must be null or one of" in p for p in problems)
    assert any("vlm_frames must be null or a whole number >= 2" in p for p in problems)


def test_vae_tiles_at_the_authors_tile_size_and_restore() -> None:
    renderer = Renderer.tiny(make_tokenizer(), seed=0)
    vae = renderer.vae
    with renderer.vae_tiles(True):
        assert vae.use_tiling
        assert (vae.tile_sample_min_height, vae.tile_sample_min_width) == (240, 416)
        assert (vae.tile_sample_stride_height, vae.tile_sample_stride_width) == (120, 208)
    assert not vae.use_tiling


def test_profiles_change_how_not_what() -> None:
    official = apply_profile(TINY_SETTINGS, "official")
    assert (official.num_frames, official.height, official.steps) == (17, 64, 8)
    assert official.vlm_frames == 6 and official.sampler == "euler"
    assert official.sampling.temperature == 0.7 and official.sampling.top_p == 0.9
    assert official.sampling.max_new_tokens == 1024
    assert official.negative_prompt.startswith("vivid colors, overexposed")
    # "paper" undoes exactly what "official" sets.
    assert set(PROFILES["paper"]) == set(OFFICIAL)
    back = apply_profile(official, "paper")
    assert back.vlm_frames is None and back.sampler == "scheduler" and back.system_prompt is None
    with pytest.raises(ConfigError, match="unknown inference profile 'offical'"):
        apply_profile(TINY_SETTINGS, "offical")


def test_official_reasoner_input_is_six_frames(tiny_checkpoint, toy_video) -> None:  # noqa: F811
    pipe = VANSPipeline.from_checkpoint(tiny_checkpoint, profile="official")
    clip = load_input(pipe.settings, video=toy_video)
    assert clip.vlm_frames.shape[0] == 6
    assert pipe.reasoner.system_prompt == OFFICIAL["system_prompt"]
    # Their processor gets no fps: mRoPE's time scale is the processor's default of 2 fps.
    assert second_per_grid_t(pipe.reasoner.fps) == 1.0


def test_cli_predict_with_the_official_profile(tiny_checkpoint, toy_video, tmp_path, capsys):  # noqa: F811
    args = ["predict", "--checkpoint", str(tiny_checkpoint), "--video", toy_video]
    args += ["--question", "What happens next?", "--out", str(tmp_path / "o")]
    assert run([*args, "--profile", "official"]) == 0
    report = json.loads((tmp_path / "o" / "prediction.json").read_text())
    assert report["profile"] == "official"
    assert report["settings"]["sampler"] == "euler" and report["settings"]["vae_tiling"]
    assert math.isclose(report["settings"]["output_fps"], 11.0)
    assert run([*args[:-1], str(tmp_path / "p"), "--profile", "offical"]) != 0
    err = capsys.readouterr().err
    assert "unknown inference profile 'offical'" in err and "Traceback" not in err
    assert not (tmp_path / "p").exists()
