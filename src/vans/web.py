"""`vans serve`: the web demo (Gradio, as the VANS authors' demo).

Upload a video (or an image, a static clip), ask one question per line, and see for each
the reasoning, the caption and the answer video, with the denoising steps as progress. The
page never shows a stack trace: every bad upload or question is a one-line message in the
status box (`answer`), from the same checks `vans predict` makes (`load_input`,
`check_questions`).

`answer` is the whole request, a plain function of its inputs (the browser test drives it
through the page, and unit tests call it); `build_app` only lays it out.
"""

from __future__ import annotations

import logging
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vans.data.video import write_mp4
from vans.errors import VansError
from vans.models.pipeline import VANSPipeline, check_questions, load_input

logger = logging.getLogger(__name__)

MAX_QUESTIONS = 4
"""Questions per request: each is one more video rendered in the same batch."""
MAX_UPLOAD_MB = 100.0
ANSWER_HEIGHT = 320
"""Pixels: a toy clip is 64x64, a paper one 352x640; both play at a readable size."""


@dataclass
class Reply:
    """What one request shows: a status line and, per question, its answer."""

    status: str
    answers: list[tuple[str, Path]]
    """(Markdown of question, reasoning and caption; the answer video's path)."""


def answer(
    pipeline: VANSPipeline,
    video: str | None,
    image: str | None,
    questions: str,
    *,
    out_dir: Path,
    seed: int = 0,
    max_upload_mb: float = MAX_UPLOAD_MB,
    progress: Callable[[int, int], None] | None = None,
) -> Reply:
    """Answer every question (one per line) about the uploaded video or image; a bad
    upload or question gives a Reply with the reason and no answers."""
    try:
        asked = check_questions([q.strip() for q in (questions or "").splitlines() if q.strip()])
        if len(asked) > MAX_QUESTIONS:
            raise VansError(f"{len(asked)} questions: ask at most {MAX_QUESTIONS} at once")
        path = _one_upload(video, image, max_upload_mb)
        kind = "video" if video else "image"
        clip = load_input(pipeline.settings, **{kind: path})
        answers = pipeline(asked, clip=clip, seed=seed, progress=progress)
    except VansError as exc:
        return Reply(f"**Cannot answer:** {exc}", [])
    request = out_dir / uuid.uuid4().hex
    rows = []
    for i, (q, a) in enumerate(zip(asked, answers, strict=True), 1):
        video_path = write_mp4(request / f"answer_{i}.mp4", a.video, pipeline.settings.output_fps)
        note = "" if a.well_formed else "\n\n*(the reasoner broke the [Think]/[Ans] template)*"
        text = f"### {i}. {_md(q)}\n\n**Reasoning:** {_md(a.think)}\n\n"
        rows.append((text + f"**Caption:** {_md(a.caption)}{note}", video_path))
    return Reply(f"Answered {len(rows)} question(s).", rows)


def _one_upload(video: str | None, image: str | None, max_upload_mb: float) -> Path:
    if bool(video) == bool(image):
        raise VansError("upload a video or an image (one of them)")
    path = Path(video or image)
    if not path.is_file():
        raise VansError(f"{path.name}: the upload did not arrive; upload it again")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_upload_mb:
        raise VansError(
            f"{path.name} is {size_mb:.1f} MB; the limit is {max_upload_mb:g} MB (trim the clip)"
        )
    return path


def _md(text: str) -> str:
    """Model text shown literally: Markdown and HTML characters escaped."""
    return "".join("\\" + c if c in "\\`*_{}[]()#+-.!|<>~" else c for c in text) or "(empty)"


def build_app(
    pipeline: VANSPipeline,
    *,
    title: str = "VANS: video as answer",
    max_upload_mb: float = MAX_UPLOAD_MB,
    out_dir: Path | None = None,
) -> Any:
    """The Gradio Blocks of the demo around `pipeline`; answer videos go to `out_dir`
    (default: a new temporary directory), which the app must be allowed to serve."""
    import gradio as gr

    out_dir = Path(out_dir or tempfile.mkdtemp(prefix="vans-serve-"))
    with gr.Blocks(title=title) as app:
        gr.Markdown(
            f"# {title}\nUpload a video (or an image), ask what happens next (one question "
            "per line), and the model answers each with its reasoning, a caption and a video."
        )
        with gr.Row():
            video_in = gr.Video(
                label="Input video", sources=["upload"], elem_id="video-in", height=ANSWER_HEIGHT
            )
            image_in = gr.Image(
                label="or an image", type="filepath", elem_id="image-in", height=ANSWER_HEIGHT
            )
        questions_in = gr.Textbox(
            label=f"Questions (one per line, at most {MAX_QUESTIONS})",
            lines=3,
            placeholder="What happens next?",
            elem_id="questions",
        )
        seed_in = gr.Number(label="Seed", value=0, precision=0, minimum=0, elem_id="seed")
        go = gr.Button("Answer", variant="primary", elem_id="answer")
        status = gr.Markdown(elem_id="status")
        slots = []
        for i in range(MAX_QUESTIONS):
            with gr.Row(visible=False, equal_height=True) as row:
                text = gr.Markdown()
                video_out = gr.Video(
                    label=f"Answer {i + 1}", elem_id=f"answer-{i + 1}", height=ANSWER_HEIGHT
                )
            slots.append((row, text, video_out))

        def run(video, image, questions, seed, progress=gr.Progress()):  # noqa: B008
            def steps(done: int, total: int) -> None:
                progress((done, total), desc="rendering the answer videos", unit="steps")

            try:
                reply = answer(
                    pipeline, video, image, questions,
                    out_dir=out_dir, seed=int(seed or 0), max_upload_mb=max_upload_mb,
                    progress=steps,
                )  # fmt: skip
            except Exception:  # a bug, not the user's: the log has it, the page says so
                logger.exception("vans serve: the request failed")
                reply = Reply("**Internal error** (the server's log has the details).", [])
            updates: list[Any] = [reply.status]
            for i in range(MAX_QUESTIONS):
                shown = i < len(reply.answers)
                markdown, path = reply.answers[i] if shown else ("", None)
                updates += [
                    gr.Row(visible=shown),
                    gr.Markdown(markdown),
                    gr.Video(str(path) if path else None),
                ]
            return updates

        outputs = [status, *(c for slot in slots for c in slot)]
        go.click(run, [video_in, image_in, questions_in, seed_in], outputs)
    app.vans_out_dir = out_dir
    return app
