"""`vans demo`: the main job of the README.

Loads the trained toy-world checkpoint that ships with the package (or `--checkpoint`),
makes fresh toy-world scenes it has never seen, and answers each scene's questions: the
reasoning, the caption and a generated video of the next event. One scene always asks two
hypothetical questions about the same video (multi-future), answered in one batch. Every
answer is checked against the scene's ground truth (`vans.evaluation.toy_truth`): does the
caption name the objects that move and nothing absent, and does the video show them? Writes,
per answer, an animated strip input | ground truth | answer as GIF and MP4, and an HTML
page with everything.
"""

from __future__ import annotations

import html
import time
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from vans.assets import TOYWORLD_CHECKPOINT
from vans.cli.apps import SEEDS
from vans.cli.loading import quiet_model_libraries
from vans.data.manifest import load_manifest
from vans.data.schema import VideoRef, VNEPSample
from vans.data.toyworld import ToyWorldConfig
from vans.errors import VansError
from vans.outputs import claim_output

if TYPE_CHECKING:
    from vans.models.pipeline import Answer

console = Console(soft_wrap=True)  # long captions stay on one line: easy to copy and grep


def demo(
    out: Annotated[Path, typer.Option(help="Output directory.")] = Path("outputs/demo"),
    checkpoint: Annotated[
        Path, typer.Option(help="VANS checkpoint (default: the shipped toy-world model).")
    ] = TOYWORLD_CHECKPOINT,
    scenes: Annotated[int, typer.Option(min=1, help="Toy-world scenes to answer.")] = 4,
    seed: Annotated[
        int, typer.Option(**SEEDS, help="Seed of the scenes and of the answers.")
    ] = 100,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Answer fresh toy-world videos with the trained model: reasoning, caption and video."""
    settings = {"checkpoint": checkpoint.resolve(), "scenes": scenes, "seed": seed}
    claim_output(out, "demo", settings, resumable=False, overwrite=overwrite)
    quiet_model_libraries()
    from vans.data.preview import sample_answer_strip
    from vans.data.video import write_gif, write_mp4
    from vans.evaluation.runner import sample_truth
    from vans.models.checkpoint import check_checkpoint_dir
    from vans.models.pipeline import VANSPipeline, load_input

    start = time.perf_counter()
    if not checkpoint.exists() and checkpoint == TOYWORLD_CHECKPOINT:
        raise VansError(
            f"{checkpoint}: the shipped toy-world checkpoint is missing from this install; "
            "reinstall vans, or pass --checkpoint (vans reproduce toyworld writes one)"
        )
    check_checkpoint_dir(checkpoint)
    with console.status("making fresh toy-world scenes"):
        groups = _scenes(out / "toyworld", scenes, seed)
    with console.status(f"loading {checkpoint}"):
        pipeline = VANSPipeline.from_checkpoint(checkpoint)
    s = pipeline.settings
    size = (s.height, s.width)
    rows = []
    for group in groups:
        clip = load_input(s, video=group[0].input.path)
        with console.status(f"answering {len(group)} question(s) about {group[0].input.path.name}"):
            answers = pipeline([g.question for g in group], clip=clip, seed=seed)
        for sample, answer in zip(group, answers, strict=True):
            labels = ["input", "truth", "answer"]
            strip = sample_answer_strip(sample, [answer.video], labels, size)
            name = f"{sample.id}"
            write_gif(out / "answers" / f"{name}.gif", strip, s.output_fps)
            write_mp4(out / "answers" / f"{name}.mp4", strip, s.output_fps)
            checks = sample_truth(sample, answer.caption, answer.video)
            rows.append((sample, answer, name, checks))
            console.print(f"[bold]{sample.id}[/] Q: {sample.question}", highlight=False)
            console.print(f"  [Think] {answer.think}", markup=False, highlight=False)
            console.print(f"  [Ans]   {answer.caption}", markup=False, highlight=False)
            console.print(f"  truth:  {sample.answer}", markup=False, highlight=False)
            console.print(f"  check:  {_checks_line(checks)}", markup=False, highlight=False)
    page = out / "index.html"
    page.write_text(_page(rows, checkpoint))
    right = sum(_right(checks) for *_, checks in rows)
    console.print(
        f"{right} of {len(rows)} answers name the objects that move, no absent one, and show "
        "them in the video\n"
        f"{len(rows)} answers in {time.perf_counter() - start:.0f} s\n"
        f"page:    {page}\nanswers: {out / 'answers'} (input | truth | answer, GIF and MP4)",
        markup=False,
        highlight=False,
    )


def _scenes(out: Path, count: int, seed: int) -> list[list[VNEPSample]]:
    """`count` scenes (questions grouped by input video), the first multi-future one first."""
    from vans.data.toyworld import write_toyworld

    write_toyworld(ToyWorldConfig(num=4 * count, seed=seed, multi_future=0.5), out)
    by_scene: dict[VideoRef, list[VNEPSample]] = defaultdict(list)
    for sample in load_manifest(out / "manifest.jsonl"):
        by_scene[sample.input].append(sample)  # one video, one scene
    groups = list(by_scene.values())
    multi = next((g for g in groups if len(g) >= 2), None)
    if multi is None:
        raise VansError(f"seed {seed}: no multi-future scene among the generated samples")
    return [multi, *[g for g in groups if g is not multi][: count - 1]]


DEMO_CHECKS = {
    "names_movers": "names the movers",
    "no_absent_objects": "nothing absent",
    "event_right": "event",
    "movers_visible": "movers visible",
    "movers_placed": "in place",
}
"""The truth checks the demo shows per answer, as worded there."""


def _checks_line(checks: dict[str, bool | None]) -> str:
    return " · ".join(f"{label} {'yes' if checks[k] else 'no'}" for k, label in DEMO_CHECKS.items())


def _right(checks: dict[str, bool | None]) -> bool:
    """What the demo counts as a right answer: the right objects, visibly, in the video."""
    return bool(checks["names_movers"] and checks["no_absent_objects"] and checks["movers_visible"])


def _page(
    rows: list[tuple[VNEPSample, Answer, str, dict[str, bool | None]]], checkpoint: Path
) -> str:
    def esc(text: object) -> str:
        return html.escape(str(text))

    body = "".join(
        "<tr>"
        f"<td><img src='answers/{esc(name)}.gif' alt='{esc(sample.id)}'><br>"
        f"<a href='answers/{esc(name)}.mp4'>MP4</a></td>"
        f"<td><b>{esc(sample.id)}</b><br>{esc(sample.question)}</td>"
        f"<td>{esc(answer.think)}</td><td>{esc(answer.caption)}</td><td>{esc(sample.answer)}</td>"
        f"<td>{esc(_checks_line(checks))}</td>"
        "</tr>"
        for sample, answer, name, checks in rows
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vans demo</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:6px;vertical-align:top;max-width:24em}"
        "img{image-rendering:pixelated;width:400px}</style></head><body>"
        "<h1>vans demo: video as answer</h1>"
        f"<p>Model: {esc(checkpoint)}. Each animation plays the input video (blue bar), then "
        "the ground-truth next event and the model's answer side by side (green bars). "
        "Scenes with the same input video ask different hypothetical questions.</p>"
        "<table><tr><th>input | truth | answer</th><th>question</th><th>reasoning [Think]</th>"
        "<th>answer [Ans]</th><th>ground truth</th><th>truth checks</th></tr>"
        + body
        + "</table></body></html>\n"
    )
