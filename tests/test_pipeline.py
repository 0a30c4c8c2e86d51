"""The VANS checkpoint, the pipeline and the `vans init-tiny` / `vans predict` commands."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REAL_CLIPS, differing_files, run_in_two_processes
from vans.cli.main import run
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import read_video
from vans.models.checkpoint import (
    TINY_SETTINGS,
    VANSSettings,
    load_checkpoint,
    load_settings,
    save_checkpoint,
)
from vans.models.errors import CheckpointError
from vans.models.pipeline import InputError, VANSPipeline

QUESTIONS = ["What happens next?", "What if the wall were not there?"]


@pytest.fixture(scope="module")
def toy_video(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("toy")
    manifest = write_toyworld(ToyWorldConfig(num=1, families=("bounce",)), out)
    return str(next((manifest.parent / "videos").glob("*_input.mp4")))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_checkpoint_round_trip_is_exact(tiny_checkpoint, tmp_path) -> None:
    reasoner, renderer, settings = load_checkpoint(tiny_checkpoint)
    assert settings == TINY_SETTINGS
    copy = save_checkpoint(tmp_path / "copy", reasoner, renderer, settings)
    reasoner2, renderer2, settings2 = load_checkpoint(copy)
    assert settings2 == settings
    pairs = [
        (reasoner.model, reasoner2.model),
        (renderer.transformer, renderer2.transformer),
        (renderer.vae, renderer2.vae),
        (renderer.text_encoder, renderer2.text_encoder),
    ]
    for a, b in pairs:
        sa, sb = _state(a), _state(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    assert (
        reasoner2.tokenizer("The red circle").input_ids
        == reasoner.tokenizer("The red circle").input_ids
    )
    assert not list(tmp_path.glob(".copy.*")), "temporary directory left behind"


def test_pipeline_answers_two_questions_about_one_video(tiny_checkpoint, toy_video) -> None:
    pipe = VANSPipeline.from_checkpoint(tiny_checkpoint)
    calls = []
    pipe.renderer.vae.register_forward_pre_hook(lambda *_: calls.append(1))
    steps = []
    answers = pipe(QUESTIONS, video=toy_video, seed=3, progress=lambda d, t: steps.append((d, t)))
    s = pipe.settings
    assert [a.question for a in answers] == QUESTIONS
    for a in answers:
        assert a.video.shape == (s.num_frames, s.height, s.width, 3)
        assert a.video.dtype == torch.uint8
    assert steps[-1] == (s.steps, s.steps)
    again = pipe(QUESTIONS, video=toy_video, seed=3)
    for a, b in zip(answers, again, strict=True):
        assert a.caption == b.caption and torch.equal(a.video, b.video)


def test_image_input_is_a_static_clip(tiny_checkpoint, toy_video, tmp_path) -> None:
    frame = read_video(toy_video).frames[10].numpy()
    Image.fromarray(frame).save(tmp_path / "still.png")
    pipe = VANSPipeline.from_checkpoint(tiny_checkpoint)
    (answer,) = pipe(QUESTIONS[:1], image=tmp_path / "still.png")
    assert answer.video.shape == (17, 64, 64, 3)


@pytest.mark.parametrize("source", ["toy", "real"])
def test_cli_predict_writes_videos_and_report(tiny_checkpoint, toy_video, tmp_path, capsys, source):
    video = toy_video if source == "toy" else REAL_CLIPS / "93_172.mp4"
    if source == "real" and not video.exists():
        pytest.skip("shared/data/real_clips is not beside the checkout")
    args = ["predict", "--checkpoint", str(tiny_checkpoint), "--video", str(video)]
    for q in QUESTIONS:
        args += ["--question", q]
    assert run([*args, "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "prediction.json").read_text())
    assert [a["question"] for a in report["answers"]] == QUESTIONS
    assert report["settings"]["num_frames"] == 17
    assert {"decode", "reason", "vae_encode", "denoise", "vae_decode"} <= set(report["timings_s"])
    for a in report["answers"]:
        out = read_video(tmp_path / a["video"])
        assert out.frames.shape == (17, 64, 64, 3)
        assert out.fps == pytest.approx(TINY_SETTINGS.output_fps)
        assert isinstance(a["think"], str) and isinstance(a["caption"], str)
    printed = capsys.readouterr().out
    assert "Q1" in printed and "Q2" in printed and "prediction.json" in printed


def _predict_error(args: list[str], capsys) -> str:
    code = run(["predict", *args])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
    return err


def test_cli_errors_are_clear(tiny_checkpoint, toy_video, tmp_path, capsys) -> None:
    base = ["--question", "What happens next?", "--out", str(tmp_path / "o")]
    broken = tmp_path / "broken"
    shutil.copytree(tiny_checkpoint, broken)
    shutil.rmtree(broken / "vdm")
    err = _predict_error(["--checkpoint", str(broken), "--video", toy_video, *base], capsys)
    assert "missing vdm" in err and "init-tiny" in err

    no_weights = tmp_path / "no_weights"
    shutil.copytree(tiny_checkpoint, no_weights)
    (no_weights / "vlm" / "model.safetensors").unlink()
    err = _predict_error(["--checkpoint", str(no_weights), "--video", toy_video, *base], capsys)
    assert "vlm" in err and "weights" in err

    start = time.perf_counter()
    err = _predict_error(
        ["--checkpoint", "Qwen/Qwen2.5-VL-3B-Instruct", "--video", toy_video, *base], capsys
    )
    assert "hub id" in err and time.perf_counter() - start < 5

    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    err = _predict_error(
        ["--checkpoint", str(tiny_checkpoint), "--video", str(garbage), *base], capsys
    )
    assert str(garbage) in err

    err = _predict_error(
        [
            "--checkpoint",
            str(tiny_checkpoint),
            "--video",
            toy_video,
            "--question",
            " ",
            "--out",
            str(tmp_path / "o"),
        ],
        capsys,
    )
    assert "question 1 is empty" in err


def test_paper_config_is_the_default_settings() -> None:
    paper = load_settings(Path(__file__).resolve().parents[1] / "configs" / "paper")
    assert paper == VANSSettings()
    assert (paper.num_reference_frames, paper.vlm_fps, paper.num_frames) == (6, 1.0, 33)
    assert (paper.height, paper.width, paper.steps, paper.guidance_scale) == (352, 640, 50, 5.0)


def test_flow_shift_setting_reaches_the_scheduler(tiny_checkpoint) -> None:
    renderer = load_checkpoint(tiny_checkpoint)[1]
    sigmas_5 = renderer.scheduler.set_timesteps(4) or renderer.scheduler.sigmas.clone()
    renderer.set_shift(1.0)
    renderer.scheduler.set_timesteps(4)
    # shift s maps sigma to s*sigma / (1 + (s-1)*sigma): a larger shift keeps more noise.
    assert renderer.scheduler.config.shift == 1.0
    assert (sigmas_5[1:-1] > renderer.scheduler.sigmas[1:-1]).all()


def test_settings_reject_unknown_keys(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="unknown settings"):
        VANSSettings.from_dict({"num_frame": 33})
    with pytest.raises(InputError, match="exactly one input"):
        from vans.models.pipeline import load_input

        load_input(VANSSettings())


def test_same_seed_same_checkpoint(tmp_path) -> None:
    from vans.models.checkpoint import init_tiny

    a = load_checkpoint(init_tiny(tmp_path / "a", seed=5))[1]
    b = load_checkpoint(init_tiny(tmp_path / "b", seed=5))[1]
    for (k, x), (_, y) in zip(
        a.transformer.state_dict().items(), b.transformer.state_dict().items(), strict=True
    ):
        assert torch.equal(x, y), k
    assert np.isfinite(a.transformer.state_dict()["proj_out.weight"].numpy()).all()


def test_cli_predict_in_bfloat16(tiny_checkpoint, toy_video, tmp_path) -> None:
    """The README's GPU command, on the CPU: diffusers keeps some DiT parameters in float32,
    and the DiT's input must still take the compute dtype."""
    args = ["predict", "--checkpoint", str(tiny_checkpoint), "--video", str(toy_video)]
    assert (
        run([*args, "--question", "What next?", "--out", str(tmp_path), "--dtype", "bfloat16"]) == 0
    )
    report = json.loads((tmp_path / "prediction.json").read_text())
    assert read_video(tmp_path / report["answers"][0]["video"]).frames.shape == (17, 64, 64, 3)


def test_predict_in_two_processes_writes_the_same_answers(tiny_checkpoint, toy_video, tmp_path):
    """Same seed, same bytes: the answer MP4s and every field of prediction.json but the
    timings, from two processes running at once."""
    command = [
        "predict", "--checkpoint", str(tiny_checkpoint), "--video", str(toy_video),
        "--question", QUESTIONS[0], "--seed", "3",
    ]  # fmt: skip
    outs = run_in_two_processes(command, tmp_path)
    reports = [json.loads((o / "prediction.json").read_text()) for o in outs]
    for report in reports:
        report.pop("timings_s")
    assert reports[0] == reports[1]
    assert differing_files(*outs) == ["prediction.json"]  # its timings
