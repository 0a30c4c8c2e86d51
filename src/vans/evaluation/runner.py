"""The evaluation run behind `vans eval`: answer (or load answers for) every sample of a
manifest, score each one, and aggregate the paper's table.

Layout of the output directory::

    out/
      vans-output.json        what produced the scores (checked on resume: vans.outputs)
      samples/<id>/answer.mp4 the generated video (pipeline mode)
      samples/<id>/features.safetensors  FVD features of the answer and the ground truth
      samples/<id>/scores.json          written last: its presence marks the sample done
                                        (toy-world samples: with their truth checks)
      failures.jsonl          samples that could not be scored, with the reason
      results.json / results.md

A rerun skips every sample whose scores.json reads back, so an interrupted evaluation
resumes where it stopped (an unreadable one is scored again); a bad sample (unreadable
video, missing prediction) is recorded in failures.jsonl and skipped, and is retried on the
next run.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

from vans.data.schema import VNEPSample
from vans.data.video import read_video, write_mp4
from vans.errors import VansError
from vans.evaluation.embedders import VideoTextEmbedder, video_features
from vans.evaluation.fvd import I3D, frechet_distance_from_features
from vans.evaluation.report import METRICS, results_markdown
from vans.evaluation.text_metrics import DEFAULT_ROUGE_VARIANT, ROUGE_VARIANTS, corpus_bleu, rouge_l
from vans.evaluation.toy_truth import CHECKS, is_toy_sample, toy_truth
from vans.evaluation.video_metrics import align_frames, clip_t, clip_v
from vans.io import atomic_file, write_json, write_text
from vans.models.prompting import parse_output
from vans.outputs import claim_output

VIDEO_METRICS = ("fvd", "clip_v", "clip_t")


class EvalError(VansError):
    """An evaluation that cannot start: bad metric names, a reused output directory, ..."""


@dataclass
class Prediction:
    """One answer to score."""

    caption: str
    video: torch.Tensor | None
    """uint8 (T, H, W, 3), or None when only text metrics are requested."""
    think: str = ""
    well_formed: bool | None = None
    """Whether the raw output followed the [Think]/[Ans] template; None when unknown (saved
    predictions without their raw text)."""
    fps: float = 8.0


class Predictor(Protocol):
    """Produces the answer to one sample (by running a model or by reading saved outputs)."""

    writes_videos: bool
    """True when the videos are new and belong in the output directory."""

    def __call__(self, sample: VNEPSample) -> Prediction: ...


def sample_seed(seed: int, sample_id: str) -> int:
    """A per-sample seed that depends only on the sample, never on its position in the run,
    so resumed and reordered runs generate the same answers."""
    return (seed + zlib.crc32(sample_id.encode())) % 2**31


class PipelinePredictor:
    """Answers with a `VANSPipeline` (one question per sample)."""

    writes_videos = True

    def __init__(self, pipeline: Any, *, seed: int = 0, videos: bool = True) -> None:
        self.pipeline = pipeline
        self.seed = seed
        self.videos = videos

    def __call__(self, sample: VNEPSample) -> Prediction:
        from vans.models.pipeline import load_input

        settings = self.pipeline.settings
        ref = sample.input
        clip = load_input(settings, video=ref.path, start=ref.start, end=ref.end)
        seed = sample_seed(self.seed, sample.id)
        if not self.videos:
            (parsed,) = self.pipeline.reasoner.predict(
                clip.vlm_frames, [sample.question], settings.sampling, seed=seed
            )
            return Prediction(parsed.caption, None, parsed.think, parsed.well_formed)
        (answer,) = self.pipeline([sample.question], clip=clip, seed=seed)
        return Prediction(
            answer.caption, answer.video, answer.think, answer.well_formed, settings.output_fps
        )


class SavedPredictions:
    """Answers written by another system: `predictions.jsonl` in `root`, one row per sample,
    `{"id": ..., "caption": ..., "video": "path/relative/to/root.mp4"}`. Optional: `think`,
    and `text`, the raw output, from which the well-formed check (and a missing `think`) is
    taken; without it a boolean `well_formed` is used if given, else it is unknown."""

    writes_videos = False

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        file = self.root / "predictions.jsonl"
        if not file.is_file():
            raise EvalError(f"{file}: not found; --predictions needs a predictions.jsonl")
        try:
            text = file.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise EvalError(
                f"{file}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
            ) from None
        self.rows: dict[str, dict[str, Any]] = {}
        lines: dict[str, int] = {}
        for line_no, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise EvalError(f"{file}:{line_no}: invalid JSON: {exc.msg}") from None
            if not isinstance(row, dict) or not isinstance(row.get("id"), str):
                raise EvalError(f'{file}:{line_no}: a row needs a string "id"')
            if not isinstance(row.get("caption"), str):
                raise EvalError(f"{file}:{line_no}: caption: a string is required")
            if not isinstance(row.get("text", ""), str):
                raise EvalError(f"{file}:{line_no}: text: the raw output must be a string")
            if not isinstance(row.get("well_formed", False), bool):
                raise EvalError(f"{file}:{line_no}: well_formed: must be true or false")
            if row["id"] in lines:
                raise EvalError(
                    f"{file}:{line_no}: id {row['id']!r} is also on line {lines[row['id']]}; "
                    "keep one prediction per sample"
                )
            lines[row["id"]] = line_no
            self.rows[row["id"]] = row

    def __call__(self, sample: VNEPSample) -> Prediction:
        row = self.rows.get(sample.id)
        if row is None:
            raise EvalError(f"no prediction for sample {sample.id!r} in {self.root}")
        video = None
        if row.get("video"):
            decoded = read_video(self.root / row["video"])
            video, fps = decoded.frames, decoded.fps
        think, well_formed = row.get("think", ""), row.get("well_formed")
        if "text" in row:
            parsed = parse_output(row["text"])
            think, well_formed = row.get("think", parsed.think), parsed.well_formed
        return Prediction(
            row["caption"], video, think, well_formed, fps if video is not None else 8.0
        )


@dataclass
class SampleScores:
    """The per-sample record (scores.json)."""

    id: str
    question: str
    answer: str
    caption: str
    think: str
    well_formed: bool | None
    rouge_l: dict[str, float]
    """ROUGE-L of the caption in every variant."""
    clip_v: float | None = None
    clip_t: float | None = None
    """Generated frames vs the ground-truth caption (the table's CLIP-T)."""
    clip_t_own: float | None = None
    """Generated frames vs the model's own caption (how faithfully the renderer followed it;
    the Stage-2 reward r_c2)."""
    frames: int | None = None
    size: list[int] | None = None
    video: str | None = None
    family: str | None = None
    """The toy-world family of the sample (None for other data)."""
    truth: dict[str, bool | None] | None = None
    """Toy-world samples: the truth checks (`toy_truth.CHECKS`); None where one does not apply
    (the video checks without a video). None for other data."""


@dataclass
class EvalSettings:
    """What to compute; recorded in the output folder and checked on resume
    (`vans.outputs`)."""

    metrics: tuple[str, ...] = METRICS
    rouge_variant: str = DEFAULT_ROUGE_VARIANT
    source: str = ""
    """The checkpoint or predictions directory."""
    embedder: str | None = None
    i3d: str | None = None
    seed: int = 0
    profile: str | None = None
    """The inference profile over the checkpoint's vans.yaml (`vans.models.profiles`)."""


@dataclass
class EvalResult:
    """One row of the results table plus the protocol that produced it."""

    name: str
    metrics: dict[str, float | None]
    fvd_label: str
    protocol: dict[str, Any]
    num_samples: int
    num_failed: int
    rouge_l_variants: dict[str, float | None] = field(default_factory=dict)
    well_formed: float | None = None
    """Fraction of answers that follow the [Think]/[Ans] template (of those where it is known)."""
    truth: dict[str, float | None] = field(default_factory=dict)
    """Toy-world samples: the rate of each truth check over the samples it applies to."""
    truth_by_family: dict[str, dict[str, float | None]] = field(default_factory=dict)
    truth_samples: dict[str, int] = field(default_factory=dict)
    """Toy-world samples scored, per family."""


def check_metrics(
    metrics: Sequence[str], *, embedder: VideoTextEmbedder | None, i3d: I3D | None
) -> tuple[str, ...]:
    if not metrics:
        raise EvalError(f"no metric asked for; choose from {', '.join(METRICS)}")
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise EvalError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(METRICS)}")
    need_embedder = [m for m in metrics if m in ("clip_v", "clip_t")]
    if need_embedder and embedder is None:
        raise EvalError(f"{', '.join(need_embedder)} need --embedder (a CLIP or toy-world dir)")
    if "fvd" in metrics and embedder is None and i3d is None:
        raise EvalError("fvd needs --i3d (TorchScript I3D) or --embedder (FVD-toy features)")
    return tuple(m for m in METRICS if m in metrics)


def evaluate(
    samples: Sequence[VNEPSample],
    predictor: Predictor,
    out: str | Path,
    settings: EvalSettings,
    *,
    embedder: VideoTextEmbedder | None = None,
    i3d: I3D | None = None,
    name: str = "model",
    failures: Sequence[dict[str, str]] = (),
    on_sample: Callable[[str, str], None] | None = None,
) -> EvalResult:
    """Score every sample (skipping those already scored in `out`), then aggregate.

    `failures` are problems found before the run (invalid manifest rows); they are reported
    with the samples that fail here. `on_sample(id, status)` is called after each sample with
    status "done", "skipped" (already scored) or "failed".

    Toy-world samples (an `extra` with the toy world's ground truth) also get the truth checks
    of `toy_truth` in their scores.json, aggregated into `EvalResult.truth` (and per family);
    samples scored before those checks existed get them when the run is resumed.
    """
    out = Path(out)
    metrics = check_metrics(settings.metrics, embedder=embedder, i3d=i3d)
    if settings.rouge_variant not in ROUGE_VARIANTS:
        raise EvalError(
            f"unknown ROUGE-L variant {settings.rouge_variant!r}; choose from "
            f"{', '.join(ROUGE_VARIANTS)}"
        )
    claim_output(out, "eval", asdict(settings), resumable=True)
    wants_video = any(m in VIDEO_METRICS for m in metrics)
    fvd_label = _fvd_label(embedder, i3d)
    records: list[SampleScores] = []
    features: list[tuple[torch.Tensor, torch.Tensor]] = []
    failed = list(failures)
    for sample in samples:
        folder = sample_folder(out, sample.id)
        done = folder / "scores.json"
        try:
            record = _finished(done)
            if record is not None:
                if record.truth is None and is_toy_sample(sample.extra):
                    _backfill_truth(record, sample, predictor, folder)
                feats = _load_features(folder) if "fvd" in metrics else None
                status = "skipped"
            else:
                record, feats = _score_sample(
                    sample, predictor, folder, metrics, embedder, i3d, wants_video
                )
                status = "done"
        except Exception as exc:  # a bad sample never ends the run
            failed.append({"id": sample.id, "error": f"{type(exc).__name__}: {exc}"})
            status = "failed"
        else:
            records.append(record)
            if feats is not None:
                features.append(feats)
        if on_sample is not None:
            on_sample(sample.id, status)
    _write_failures(out / "failures.jsonl", failed)
    result = _aggregate(records, features, metrics, settings, fvd_label, name, len(failed))
    write_json(out / "results.json", asdict(result))
    write_text(out / "results.md", results_markdown([result]))
    return result


def _score_sample(
    sample: VNEPSample,
    predictor: Predictor,
    folder: Path,
    metrics: tuple[str, ...],
    embedder: VideoTextEmbedder | None,
    i3d: I3D | None,
    wants_video: bool,
) -> tuple[SampleScores, tuple[torch.Tensor, torch.Tensor] | None]:
    pred = predictor(sample)
    record = SampleScores(
        id=sample.id,
        question=sample.question,
        answer=sample.answer,
        caption=pred.caption,
        think=pred.think,
        well_formed=pred.well_formed,
        rouge_l={v: rouge_l(pred.caption, sample.answer, v) for v in ROUGE_VARIANTS},
    )
    feats = None
    if wants_video:
        if pred.video is None:
            raise EvalError(f"sample {sample.id!r}: video metrics need a generated video")
        video = pred.video
        target = sample.target
        # The ground truth at the answer's size; if frame counts differ, both are resampled
        # in time to the shorter count, so frame i of each covers the same moment.
        truth = read_video(
            target.path, start=target.start, end=target.end, size=(video.shape[1], video.shape[2])
        ).frames
        aligned, truth = align_frames(video, truth)
        record.frames, record.size = video.shape[0], [video.shape[1], video.shape[2]]
        if embedder is not None:
            record.clip_v = clip_v(embedder, aligned, truth)
            record.clip_t = clip_t(embedder, video, sample.answer)
            record.clip_t_own = clip_t(embedder, video, pred.caption)
        if "fvd" in metrics:
            feats = _fvd_features([aligned, truth], embedder, i3d)
        if feats is not None:
            with atomic_file(folder / "features.safetensors") as tmp:
                save_file({"generated": feats[0], "truth": feats[1]}, str(tmp))
    # Also without video metrics: a toy-world answer's video is judged by the truth checks.
    if pred.video is not None and predictor.writes_videos:
        folder.mkdir(parents=True, exist_ok=True)
        record.video = write_mp4(folder / "answer.mp4", pred.video, pred.fps).name
    if is_toy_sample(sample.extra):
        _add_truth(record, sample, pred.video)
    write_json(folder / "scores.json", asdict(record))
    return record, feats


def sample_truth(
    sample: VNEPSample, caption: str, video: torch.Tensor | None
) -> dict[str, bool | None]:
    """The toy-world truth checks (`toy_truth`) of an answer to a toy sample: its caption
    and, if any, its video (uint8 (T, H, W, 3)); None for a check that does not apply."""
    input_frame = None
    if video is not None:
        ref = sample.input
        input_frame = read_video(ref.path, start=ref.start, end=ref.end).frames[-1]
    checks = toy_truth(sample.extra or {}, sample.answer, caption, video, input_frame)
    return {
        k: None if isinstance(v, float) and math.isnan(v) else bool(v) for k, v in checks.items()
    }


def _add_truth(record: SampleScores, sample: VNEPSample, video: torch.Tensor | None) -> None:
    record.family = (sample.extra or {})["family"]
    record.truth = sample_truth(sample, record.caption, video)


def _backfill_truth(
    record: SampleScores, sample: VNEPSample, predictor: Predictor, folder: Path
) -> None:
    """Give a toy-world sample scored before the truth checks existed its checks, from the
    same answer a fresh run scores: the saved answer.mp4, or the saved prediction."""
    video = None
    if record.video is not None:
        video = read_video(folder / record.video).frames
    elif not predictor.writes_videos:
        video = predictor(sample).video
    _add_truth(record, sample, video)
    write_json(folder / "scores.json", asdict(record))


def _fvd_features(
    videos: list[torch.Tensor], embedder: VideoTextEmbedder | None, i3d: I3D | None
) -> tuple[torch.Tensor, torch.Tensor]:
    feats = i3d.features(videos) if i3d is not None else video_features(embedder, videos)
    return feats[0].float().contiguous(), feats[1].float().contiguous()


def _load_features(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tensors = load_file(str(folder / "features.safetensors"))
    return tensors["generated"], tensors["truth"]


def _fvd_label(embedder: VideoTextEmbedder | None, i3d: I3D | None) -> str:
    if i3d is not None:
        return "FVD"
    if embedder is not None and embedder.name == "toyworld":
        return "FVD-toy"
    # Fréchet distance of image-text embeddings: not FVD, and never called so.
    return f"FD-{embedder.name}" if embedder is not None else "FVD"


def _aggregate(
    records: list[SampleScores],
    features: list[tuple[torch.Tensor, torch.Tensor]],
    metrics: tuple[str, ...],
    settings: EvalSettings,
    fvd_label: str,
    name: str,
    num_failed: int,
) -> EvalResult:
    values: dict[str, float | None] = dict.fromkeys(metrics)
    if records and "bleu4" in metrics:
        values["bleu4"] = corpus_bleu([r.caption for r in records], [r.answer for r in records])[3]
    variants = {v: _mean([r.rouge_l[v] for r in records]) for v in ROUGE_VARIANTS}
    if "rouge_l" in metrics:
        values["rouge_l"] = variants[settings.rouge_variant]
    for key in ("clip_v", "clip_t"):
        if key in metrics:
            values[key] = _mean([getattr(r, key) for r in records])
    if "fvd" in metrics and len(features) >= 2:
        generated = torch.stack([f[0] for f in features]).double().numpy()
        truth = torch.stack([f[1] for f in features]).double().numpy()
        values["fvd"] = frechet_distance_from_features(truth, generated)
    toy = [r for r in records if r.truth is not None]
    families = sorted({r.family for r in toy})
    sizes = {(r.frames, *r.size) for r in records if r.size is not None}
    protocol = {
        "samples": len(records),
        "failed": num_failed,
        "video": [{"frames": f, "height": h, "width": w} for f, h, w in sorted(sizes)],
        "rouge_l_variant": settings.rouge_variant,
        "embedder": settings.embedder,
        "fvd": fvd_label if "fvd" in metrics else None,
        "i3d": settings.i3d,
        "source": settings.source,
        "seed": settings.seed,
    }
    return EvalResult(
        name,
        values,
        fvd_label,
        protocol,
        len(records),
        num_failed,
        variants,
        well_formed=_mean([r.well_formed for r in records]),
        truth=_truth_rates(toy) if toy else {},
        truth_by_family={f: _truth_rates([r for r in toy if r.family == f]) for f in families},
        truth_samples={f: sum(r.family == f for r in toy) for f in families},
    )


def _mean(values: list[float | bool | None]) -> float | None:
    """The mean of the values that are not None (a rate, for booleans), or None."""
    kept = [float(v) for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def _truth_rates(records: list[SampleScores]) -> dict[str, float | None]:
    """The fraction of records passing each truth check, over those it applies to."""
    return {key: _mean([r.truth.get(key) for r in records]) for key in CHECKS}


def _finished(done: Path) -> SampleScores | None:
    """The scores of a sample an earlier run finished; None when there are none or they
    cannot be read (a run killed while writing, a damaged disk): the sample is scored again."""
    try:
        return SampleScores(**json.loads(done.read_text(encoding="utf-8")))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError):
        done.unlink(missing_ok=True)
        return None


def _write_failures(path: Path, failures: Sequence[dict[str, str]]) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text("".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))


def sample_folder(out: str | Path, sample_id: str) -> Path:
    """Where an evaluation in `out` keeps a sample's scores (and answer.mp4); sample ids are
    file names (`vans.data.schema.SAMPLE_ID`)."""
    return Path(out) / "samples" / sample_id
