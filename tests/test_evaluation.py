"""Embedders, CLIP-V / CLIP-T, the eval runner (resume, bad samples) and `vans eval`."""

from __future__ import annotations

import json
import math
import shutil
import statistics
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from vans.cli.main import run
from vans.data.manifest import load_manifest, write_manifest
from vans.data.schema import VideoRef, VNEPSample
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import read_video, write_mp4
from vans.evaluation.embedders import (
    CLIPEmbedder,
    EmbedderError,
    VideoTextEmbedder,
    clip_pixel_values,
    load_embedder,
    video_features,
)
from vans.evaluation.fvd import frechet_distance_from_features
from vans.evaluation.report import results_markdown
from vans.evaluation.runner import (
    EvalError,
    EvalSettings,
    Prediction,
    SavedPredictions,
    evaluate,
    sample_folder,
    sample_seed,
)
from vans.evaluation.text_metrics import corpus_bleu, rouge_l
from vans.evaluation.toy_truth import CHECKS, toy_truth
from vans.evaluation.video_metrics import aligned_indices, clip_t, clip_v
from vans.models.prompting import format_target
from vans.outputs import OutputError

COLOURS = {"red": (1.0, 0.0, 0.0), "green": (0.0, 1.0, 0.0), "blue": (0.0, 0.0, 1.0)}


class MeanColourEmbedder:
    """A hand-computable embedder for testing the metric arithmetic: a frame's embedding is
    its normalised mean RGB; a text's is the sum of the colours it names."""

    name = "mean-colour"

    def __init__(self) -> None:
        self.frame_calls = 0

    def embed_frames(self, frames: torch.Tensor) -> torch.Tensor:
        self.frame_calls += 1
        return torch.nn.functional.normalize(frames.float().mean((1, 2)) + 1e-6, dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        rows = []
        for text in texts:
            v = torch.zeros(3)
            for word, rgb in COLOURS.items():
                if word in text.lower():
                    v += torch.tensor(rgb)
            rows.append(v if v.any() else torch.ones(3))
        return torch.nn.functional.normalize(torch.stack(rows), dim=-1)


def solid(colours: Sequence[tuple[int, int, int]], size: tuple[int, int] = (8, 8)) -> torch.Tensor:
    frames = torch.zeros(len(colours), *size, 3, dtype=torch.uint8)
    for i, c in enumerate(colours):
        frames[i] = torch.tensor(c, dtype=torch.uint8)
    return frames


@pytest.fixture(scope="module")
def tiny_clip() -> CLIPEmbedder:
    return CLIPEmbedder.tiny(seed=0)


# --- CLIP embedder -------------------------------------------------------------------------


def test_clip_preprocessing_matches_transformers_processor() -> None:
    from PIL import Image
    from transformers.models.clip import CLIPImageProcessorPil

    rng = np.random.default_rng(0)
    frames = torch.from_numpy(rng.integers(0, 256, (3, 90, 160, 3), dtype=np.uint8))
    # Smooth images: interpolation kernels agree on smooth content, differ on pixel noise.
    frames = torch.nn.functional.avg_pool2d(
        frames.permute(0, 3, 1, 2).float(), 9, stride=1, padding=4, count_include_pad=False
    )
    frames = frames.round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    processor = CLIPImageProcessorPil()  # ViT-B/32: shortest edge 224, crop 224, bicubic
    expected = processor(
        [Image.fromarray(f.numpy()) for f in frames], return_tensors="pt"
    ).pixel_values
    ours = clip_pixel_values(frames, 224)
    assert ours.shape == expected.shape == (3, 3, 224, 224)
    # One grey level after normalisation is ~0.015.
    assert (ours - expected).abs().mean() < 0.01
    assert (ours - expected).abs().max() < 0.1


def test_tiny_clip_embeddings_are_unit_and_batch_independent(tiny_clip: CLIPEmbedder) -> None:
    assert isinstance(tiny_clip, VideoTextEmbedder)
    frames = torch.randint(0, 256, (5, 40, 70, 3), dtype=torch.uint8)
    batched = tiny_clip.embed_frames(frames)
    one_by_one = torch.cat([tiny_clip.embed_frames(f[None]) for f in frames])
    assert batched.shape == (5, 16) and batched.dtype == torch.float32
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(5))
    torch.testing.assert_close(batched, one_by_one, atol=1e-5, rtol=0)
    texts = ["The red ball hits the blue cube.", "", "a much longer caption " * 30]
    t_batched = tiny_clip.embed_texts(texts)
    t_single = torch.cat([tiny_clip.embed_texts([t]) for t in texts])
    torch.testing.assert_close(t_batched, t_single, atol=1e-5, rtol=0)
    torch.testing.assert_close(t_batched.norm(dim=-1), torch.ones(3))


def test_clip_dir_round_trip_and_load_errors(tiny_clip: CLIPEmbedder, tmp_path: Path) -> None:
    tiny_clip.save_pretrained(tmp_path / "clip")
    loaded = load_embedder(tmp_path / "clip")
    frames = torch.randint(0, 256, (2, 32, 32, 3), dtype=torch.uint8)
    torch.testing.assert_close(loaded.embed_frames(frames), tiny_clip.embed_frames(frames))
    with pytest.raises(EmbedderError, match="embedder directory not found"):
        load_embedder(tmp_path / "missing")
    (tmp_path / "other").mkdir()
    with pytest.raises(EmbedderError, match="not an embedder directory"):
        load_embedder(tmp_path / "other")


# --- CLIP-V / CLIP-T ---------------------------------------------------------------------


def test_clip_v_and_clip_t_by_hand() -> None:
    emb = MeanColourEmbedder()
    red, green = (200, 0, 0), (0, 200, 0)
    generated = solid([red, red, green, green])
    truth = solid([red, green, green, green])
    # Frame-wise cosines: 1, 0, 1, 1.
    assert clip_v(emb, generated, truth) == pytest.approx(0.75, abs=1e-5)
    # Caption "red": two red frames (cos 1) and two green ones (cos 0).
    assert clip_t(emb, generated, "a red thing") == pytest.approx(0.5, abs=1e-5)
    # "red and green" is (1, 1, 0)/sqrt(2): every frame has cosine 1/sqrt(2).
    assert clip_t(emb, generated, "red and green") == pytest.approx(1 / math.sqrt(2), abs=1e-5)


def test_clip_v_aligns_different_frame_counts_in_time() -> None:
    assert aligned_indices(33, 17).tolist() == [2 * i for i in range(17)]
    assert aligned_indices(5, 5).tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="cannot pick"):
        aligned_indices(3, 5)
    emb = MeanColourEmbedder()
    red, blue = (200, 0, 0), (0, 0, 200)
    # 9 generated frames, red then blue; 3 ground-truth frames red, red, blue: the generated
    # frames used are 0, 4, 8 (red, red, blue): a perfect match.
    generated = solid([red] * 5 + [blue] * 4)
    truth = solid([red, red, blue], size=(16, 12))
    assert clip_v(emb, generated, truth) == pytest.approx(1.0, abs=1e-5)
    assert clip_v(emb, truth, generated) == pytest.approx(1.0, abs=1e-5)


def test_video_features_zero_motion_for_static_video() -> None:
    emb = MeanColourEmbedder()
    static = solid([(10, 200, 30)] * 4)
    moving = solid([(200, 0, 0), (0, 0, 200)])
    feats = video_features(emb, [static, moving])
    assert feats.shape == (2, 6)
    torch.testing.assert_close(feats[0, 3:], torch.zeros(3))
    torch.testing.assert_close(feats[1, 3:], torch.tensor([-1.0, 0.0, 1.0]), atol=1e-5, rtol=0)


# --- the runner ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_set(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    write_toyworld(
        ToyWorldConfig(num=5, seed=3, size=(32, 32), input_frames=33, target_frames=9), out
    )
    return out / "manifest.jsonl"


def write_predictions(toy_set: Path, root: Path, *, shift: int = 1) -> None:
    """Another system's outputs: the ground truth of the next sample (a wrong answer) for
    every sample, with its caption."""
    samples = load_manifest(toy_set)
    rows = []
    for i, s in enumerate(samples):
        other = samples[(i + shift) % len(samples)]
        frames = read_video(other.target.path).frames
        write_mp4(root / f"{s.id}.mp4", frames, 8.0)
        rows.append({"id": s.id, "caption": other.answer, "video": f"{s.id}.mp4"})
    (root / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


class CountingPredictor:
    """Wraps a predictor, counting calls and optionally interrupting after `stop_after`."""

    def __init__(self, inner: SavedPredictions, stop_after: int | None = None) -> None:
        self.inner, self.stop_after, self.calls = inner, stop_after, []
        self.writes_videos = inner.writes_videos

    def __call__(self, sample: VNEPSample) -> Prediction:
        if self.stop_after is not None and len(self.calls) == self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(sample.id)
        return self.inner(sample)


def test_runner_scores_match_direct_computation(toy_set: Path, tmp_path: Path) -> None:
    write_predictions(toy_set, tmp_path / "pred")
    samples = load_manifest(toy_set)
    emb = MeanColourEmbedder()
    result = evaluate(
        samples, SavedPredictions(tmp_path / "pred"), tmp_path / "out", EvalSettings(), embedder=emb
    )
    preds = SavedPredictions(tmp_path / "pred")
    captions = [preds.rows[s.id]["caption"] for s in samples]
    answers = [s.answer for s in samples]
    assert result.metrics["bleu4"] == pytest.approx(corpus_bleu(captions, answers)[3])
    rouge = np.mean([rouge_l(c, a, "coco") for c, a in zip(captions, answers, strict=True)])
    assert result.metrics["rouge_l"] == pytest.approx(rouge)
    gens = [preds(s).video for s in samples]
    truths = [read_video(s.target.path).frames for s in samples]
    expected_v = np.mean([clip_v(emb, g, t) for g, t in zip(gens, truths, strict=True)])
    expected_t = np.mean([clip_t(emb, g, s.answer) for g, s in zip(gens, samples, strict=True)])
    assert result.metrics["clip_v"] == pytest.approx(expected_v, abs=1e-6)
    assert result.metrics["clip_t"] == pytest.approx(expected_t, abs=1e-6)
    fvd = frechet_distance_from_features(
        video_features(emb, truths).double().numpy(), video_features(emb, gens).double().numpy()
    )
    assert result.metrics["fvd"] == pytest.approx(fvd, rel=1e-6)
    assert result.fvd_label == "FD-mean-colour"
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| Model | BLEU@4↑ | ROUGE-L↑ | FD-mean-colour↓ | CLIP-V↑ | CLIP-T↑ |" in table
    assert "9 frames at 32x32" in table and "coco" in table
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["num_samples"] == 5 and saved["num_failed"] == 0
    # The toy world's truth checks of each (wrong) answer, as toy_truth computes them.
    truths = []
    for s, caption, video in zip(samples, captions, gens, strict=True):
        inp = read_video(s.input.path).frames[-1]
        truths.append(toy_truth(s.extra, s.answer, caption, video, inp))
        scores = json.loads((sample_folder(tmp_path / "out", s.id) / "scores.json").read_text())
        assert scores["family"] == s.extra["family"]
        assert scores["truth"] == {k: bool(v) for k, v in truths[-1].items()}
    assert result.truth == {k: np.mean([t[k] for t in truths]) for k in CHECKS}
    assert result.truth["caption_right"] == 0  # another sample's answer is never right
    families = [s.extra["family"] for s in samples]
    assert saved["truth_samples"] == {f: families.count(f) for f in sorted(set(families))}
    assert saved["well_formed"] is None  # saved predictions without their raw text
    assert "Truth checks on the toy world (% of samples):" in table


def test_runner_resumes_without_redoing_finished_samples(toy_set: Path, tmp_path: Path) -> None:
    write_predictions(toy_set, tmp_path / "pred")
    samples = load_manifest(toy_set)
    emb = MeanColourEmbedder()
    full = evaluate(
        samples,
        SavedPredictions(tmp_path / "pred"),
        tmp_path / "full",
        EvalSettings(),
        embedder=emb,
    )
    first = CountingPredictor(SavedPredictions(tmp_path / "pred"), stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        evaluate(samples, first, tmp_path / "run", EvalSettings(), embedder=emb)
    assert len(first.calls) == 3
    second = CountingPredictor(SavedPredictions(tmp_path / "pred"))
    statuses: list[str] = []
    resumed = evaluate(
        samples,
        second,
        tmp_path / "run",
        EvalSettings(),
        embedder=emb,
        on_sample=lambda _id, status: statuses.append(status),
    )
    assert second.calls == [s.id for s in samples[3:]]
    assert statuses == ["skipped"] * 3 + ["done"] * 2
    for key, value in full.metrics.items():
        assert resumed.metrics[key] == pytest.approx(value, rel=1e-9), key
    with pytest.raises(OutputError, match=r"other settings \(changed: rouge_variant\)"):
        evaluate(
            samples,
            second,
            tmp_path / "run",
            EvalSettings(rouge_variant="rouge-score"),
            embedder=emb,
        )


def test_bad_sample_is_reported_and_skipped(toy_set: Path, tmp_path: Path) -> None:
    write_predictions(toy_set, tmp_path / "pred")
    samples = load_manifest(toy_set)
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(samples[1].target.path.read_bytes()[:300])
    samples[1] = replace(samples[1], target=VideoRef(broken))
    # No prediction for sample 2.
    lines = (tmp_path / "pred" / "predictions.jsonl").read_text().split("\n")
    (tmp_path / "pred" / "predictions.jsonl").write_text("\n".join(lines[:2] + lines[3:]))
    result = evaluate(
        samples,
        SavedPredictions(tmp_path / "pred"),
        tmp_path / "out",
        EvalSettings(),
        embedder=MeanColourEmbedder(),
    )
    assert result.num_samples == 3 and result.num_failed == 2
    failures = [json.loads(line) for line in (tmp_path / "out" / "failures.jsonl").open()]
    assert [f["id"] for f in failures] == [samples[1].id, samples[2].id]
    assert str(broken) in failures[0]["error"]
    assert "no prediction for sample" in failures[1]["error"]


@pytest.fixture(scope="module")
def toy_set_64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every family (and every hypothetical future) at 64x64, where H.264 keeps the colours
    of the smallest objects."""
    out = tmp_path_factory.mktemp("toy64")
    return write_toyworld(ToyWorldConfig(num=10, seed=1, multi_future=1.0, target_frames=9), out)


def truth_predictions(manifest: Path, root: Path) -> list[VNEPSample]:
    """Predictions that are the ground truth (its caption, its video file), each with its raw
    output text: well-formed but for the first."""
    samples = load_manifest(manifest)
    rows = []
    for i, s in enumerate(samples):
        shutil.copy(s.target.path, root / f"{s.id}.mp4")
        text = format_target(s.reasoning, s.answer)
        rows.append(
            {"id": s.id, "caption": s.answer, "video": f"{s.id}.mp4", "text": text[i == 0 :]}
        )
    (root / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return samples


def test_truth_of_the_ground_truth_is_complete(toy_set_64: Path, tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    samples = truth_predictions(toy_set_64, tmp_path / "pred")
    preds = SavedPredictions(tmp_path / "pred")
    result = evaluate(samples, preds, tmp_path / "out", EvalSettings(metrics=("rouge_l",)))
    assert result.truth == dict.fromkeys(CHECKS, 1.0)
    assert result.truth_samples == {
        "bounce": 2, "collision": 2, "fall": 2, "fill": 1, "push": 1, "sort": 1, "stack": 1
    }  # fmt: skip
    assert all(rates == dict.fromkeys(CHECKS, 1.0) for rates in result.truth_by_family.values())
    assert result.well_formed == pytest.approx(0.9)  # the first text lacks its "["
    table = (tmp_path / "out" / "results.md").read_text()
    assert "| model | " + " | ".join(["100.0"] * len(CHECKS)) + " |" in table
    assert "| model | sort | 1 | " in table
    assert "Well-formed answers ([Think]…[/Think][Ans]…[/Ans], the r_f condition): 90.0%" in table
    assert "10 toy-world samples (bounce 2, collision 2," in table

    # A run scored before the truth checks existed gains them on resume, unchanged.
    folder = sample_folder(tmp_path / "out", samples[3].id)
    record = json.loads((folder / "scores.json").read_text())
    old = {k: v for k, v in record.items() if k not in ("truth", "family")}
    (folder / "scores.json").write_text(json.dumps(old))
    statuses: list[str] = []
    resumed = evaluate(
        samples,
        preds,
        tmp_path / "out",
        EvalSettings(metrics=("rouge_l",)),
        on_sample=lambda _id, status: statuses.append(status),
    )
    assert statuses == ["skipped"] * len(samples)
    assert json.loads((folder / "scores.json").read_text()) == record
    assert resumed.truth == result.truth and resumed.truth_samples == result.truth_samples


def test_other_data_gets_no_truth_checks(toy_set_64: Path, tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    samples = [
        replace(s, source="real", extra={})
        for s in truth_predictions(toy_set_64, tmp_path / "pred")
    ]
    settings = EvalSettings(metrics=("bleu4", "rouge_l"))
    result = evaluate(samples, SavedPredictions(tmp_path / "pred"), tmp_path / "out", settings)
    assert result.truth == {} and result.truth_by_family == {} and result.truth_samples == {}
    scores = json.loads(
        (sample_folder(tmp_path / "out", samples[0].id) / "scores.json").read_text()
    )
    assert scores["truth"] is None and scores["family"] is None
    table = (tmp_path / "out" / "results.md").read_text()
    assert "Truth checks" not in table and "Names movers" not in table
    assert "90.0%" in table  # the well-formed rate is reported for any data


def test_truth_table_of_seeded_rows_shows_mean_and_std(toy_set_64: Path, tmp_path: Path) -> None:
    (tmp_path / "pred").mkdir()
    samples = truth_predictions(toy_set_64, tmp_path / "pred")
    settings = EvalSettings(metrics=("rouge_l",))
    result = evaluate(samples[:4], SavedPredictions(tmp_path / "pred"), tmp_path / "out", settings)
    half = replace(result, truth={**result.truth, "event_right": 0.5})
    text = results_markdown([[result, half]])
    # Seeds at 100% and 50%: mean 75, sample std sqrt(2 * 25**2 / 1) = 35.36.
    assert f"75.0 ± {statistics.stdev([100.0, 50.0]):.1f}" in text and "35.4" in text
    assert "| model (2 seeds) | collision | 2 | " in text


def test_saved_predictions_check_the_raw_text(toy_set: Path, tmp_path: Path) -> None:
    a, b, c = load_manifest(toy_set)[:3]
    (tmp_path / "predictions.jsonl").write_text(
        f'{{"id": "{a.id}", "caption": "x", "text": "[Think]t[/Think] [Ans]x[/Ans]"}}\n'
        f'{{"id": "{b.id}", "caption": "y", "well_formed": false}}\n'
        f'{{"id": "{c.id}", "caption": "z"}}\n'
    )
    preds = SavedPredictions(tmp_path)
    assert (preds(a).well_formed, preds(a).think) == (True, "t")
    assert preds(b).well_formed is False and preds(c).well_formed is None
    (tmp_path / "predictions.jsonl").write_text('{"id": "a", "caption": "x", "text": 3}\n')
    with pytest.raises(EvalError, match=r"predictions.jsonl:1: text"):
        SavedPredictions(tmp_path)


def test_sample_seed_depends_only_on_the_id() -> None:
    assert sample_seed(0, "a") == sample_seed(0, "a") != sample_seed(0, "b")
    assert sample_seed(1, "a") != sample_seed(0, "a")


def test_eval_cli_on_tiny_checkpoint_resumes(
    tiny_checkpoint: Path, toy_set: Path, tiny_clip: CLIPEmbedder, tmp_path: Path, capsys
) -> None:
    tiny_clip.save_pretrained(tmp_path / "clip")
    args = [
        "eval",
        "--checkpoint",
        str(tiny_checkpoint),
        "--manifest",
        str(toy_set),
        "--out",
        str(tmp_path / "eval"),
        "--embedder",
        str(tmp_path / "clip"),
        "--limit",
        "2",
    ]
    assert run(args) == 0
    first = capsys.readouterr().out
    assert "2 scored, 0 already done, 0 failed" in first
    sample = load_manifest(toy_set)[0]
    answer = read_video(tmp_path / "eval" / "samples" / sample.id / "answer.mp4")
    assert answer.frames.shape == (17, 64, 64, 3)  # the tiny checkpoint's protocol
    scores = json.loads((tmp_path / "eval" / "samples" / sample.id / "scores.json").read_text())
    assert -1 <= scores["clip_v"] <= 1 and set(scores["rouge_l"]) == {"coco", "rouge-score"}
    assert set(scores["truth"]) == set(CHECKS) and scores["family"] == sample.extra["family"]
    results = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert set(results["metrics"]) == {"bleu4", "rouge_l", "fvd", "clip_v", "clip_t"}
    assert set(results["truth"]) == set(CHECKS) and 0 <= results["well_formed"] <= 1
    assert results["protocol"]["video"] == [{"frames": 17, "height": 64, "width": 64}]
    assert run(args) == 0
    assert "0 scored, 2 already done, 0 failed" in capsys.readouterr().out
    assert json.loads((tmp_path / "eval" / "results.json").read_text()) == results


def test_eval_cli_renders_toy_answers_for_the_truth_checks(
    tiny_checkpoint: Path, toy_set: Path, tmp_path: Path
) -> None:
    """Without any video metric, a checkpoint still renders (and keeps) the answer videos of
    toy-world samples: the truth checks judge them."""
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--manifest", str(toy_set)]
    assert run([*args, "--out", str(tmp_path / "e"), "--metrics", "rouge_l", "--limit", "1"]) == 0
    sample = load_manifest(toy_set)[0]
    folder = tmp_path / "e" / "samples" / sample.id
    scores = json.loads((folder / "scores.json").read_text())
    assert scores["video"] == "answer.mp4" and (folder / "answer.mp4").is_file()
    assert all(scores["truth"][k] is not None for k in CHECKS)


def test_eval_cli_errors(tmp_path: Path, toy_set: Path, capsys) -> None:
    base = ["eval", "--manifest", str(toy_set), "--out", str(tmp_path / "o")]
    assert run(base) == 2
    assert "exactly one of --checkpoint and --predictions" in capsys.readouterr().err
    (tmp_path / "p").mkdir()
    assert run([*base, "--predictions", str(tmp_path / "p")]) == 2
    assert "predictions.jsonl" in capsys.readouterr().err
    write_predictions(toy_set, tmp_path / "p")
    assert run([*base, "--predictions", str(tmp_path / "p"), "--metrics", "clip_v"]) == 2
    assert "clip_v need --embedder" in capsys.readouterr().err
    assert run([*base, "--predictions", str(tmp_path / "p"), "--metrics", "bleu"]) == 2
    assert "unknown metric(s) bleu" in capsys.readouterr().err


def test_eval_cli_skips_invalid_manifest_rows(toy_set: Path, tmp_path: Path, capsys) -> None:
    write_predictions(toy_set, tmp_path / "p")
    samples = load_manifest(toy_set)
    manifest = write_manifest(tmp_path / "m.jsonl", samples)
    with manifest.open("a") as f:
        f.write('{"id": "x", "question": ""}\n')
    code = run(
        ["eval", "--manifest", str(manifest), "--out", str(tmp_path / "o"),
         "--predictions", str(tmp_path / "p")]
    )  # fmt: skip
    assert code == 1  # a table of fewer samples than asked for is not a success
    out = capsys.readouterr().out
    assert "skipping row" in out and "5 scored" in out and "1 failed" in out
    metrics = json.loads((tmp_path / "o" / "results.json").read_text())["metrics"]
    assert set(metrics) == {"bleu4", "rouge_l"}  # no embedder: text metrics only
