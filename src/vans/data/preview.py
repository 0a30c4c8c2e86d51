"""A look at a data set: an animated GIF grid of inputs and targets and an HTML page.

Each sample is shown as two panels (`answer_strip`): the input clip plays on the left, then
the target (the next event) plays on the right while the input holds its last frame, so the
order in time is visible. Works on any manifest, toy world or real video. The same strip
with more panels shows models' answers next to the ground truth (`vans demo`, `vans
reproduce`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from vans.data.schema import VideoRef, VNEPSample
from vans.data.video import read_video, write_gif

_GAP = 4
_BAR = 3
_INPUT_BAR = (60, 120, 255)
_TARGET_BAR = (60, 200, 90)


def _clip(ref: VideoRef, fps: float, size: tuple[int, int]) -> torch.Tensor:
    return read_video(ref.path, start=ref.start, end=ref.end, fps=fps, size=size).frames


def answer_strip(
    inp: torch.Tensor, futures: Sequence[torch.Tensor], labels: Sequence[str] = ()
) -> torch.Tensor:
    """uint8 (T, H', W', 3): the input plays in the left panel, then every future (the
    ground truth, each model's answer) plays at once in the panels to its right while the
    input holds its last frame; the playing side is marked by a coloured bar. `labels`, if
    given, name the panels (input first) in a header. All clips share one H x W."""
    t_in, h, w, _ = inp.shape
    t_out = max(len(f) for f in futures)
    n = 1 + len(futures)
    out = torch.zeros(t_in + t_out, h + _BAR, n * w + (n - 1) * _GAP, 3, dtype=torch.uint8)
    for t in range(t_in + t_out):
        out[t, _BAR:, :w] = inp[min(t, t_in - 1)]
        if t < t_in:
            out[t, :_BAR, :w] = torch.tensor(_INPUT_BAR, dtype=torch.uint8)
        for k, future in enumerate(futures, 1):
            x = k * (w + _GAP)
            if t < t_in:
                out[t, _BAR:, x : x + w] = future[0] // 3  # dimmed: not yet happened
            else:
                out[t, :_BAR, x : x + w] = torch.tensor(_TARGET_BAR, dtype=torch.uint8)
                out[t, _BAR:, x : x + w] = future[min(t - t_in, len(future) - 1)]
    if labels:
        out = torch.cat([_header(list(labels), w, out.shape[0], out.shape[2]), out], dim=1)
    return out


def sample_answer_strip(
    sample: VNEPSample,
    answers: Sequence[torch.Tensor],
    labels: Sequence[str],
    size: tuple[int, int],
) -> torch.Tensor:
    """`answer_strip` of a sample: its input, its ground truth, then each answer (uint8
    (T, H, W, 3) clips), the sample's clips resized to `size`."""
    inp, target = sample.input, sample.target
    inp_frames = read_video(inp.path, start=inp.start, end=inp.end, size=size).frames
    truth = read_video(target.path, start=target.start, end=target.end, size=size).frames
    return answer_strip(inp_frames, [truth, *answers], labels)


def _header(labels: list[str], panel: int, frames: int, width: int) -> torch.Tensor:
    """A black band with each label written over its panel (PIL's built-in font)."""
    image = Image.new("RGB", (width, 12))
    draw = ImageDraw.Draw(image)
    for k, label in enumerate(labels):
        x = k * (panel + _GAP)
        text = label
        while text and draw.textlength(text) > panel:  # keep each label over its own panel
            text = text[:-1]
        draw.text((x + 1, 0), text, fill=(230, 230, 230))
    band = torch.from_numpy(np.asarray(image).copy())
    return band.unsqueeze(0).expand(frames, -1, -1, -1)


def write_preview(
    samples: Sequence[VNEPSample],
    out_dir: str | Path,
    *,
    max_samples: int,
    fps: float = 8.0,
    cell: tuple[int, int] = (128, 128),
) -> Path:
    """Write `grid.gif`, one GIF per sample and `index.html` into `out_dir` for the first
    `max_samples` samples; return the page."""
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    chosen = list(samples)[:max_samples]
    clips = [(_clip(s.input, fps, cell), _clip(s.target, fps, cell)) for s in chosen]
    length = max(len(i) + len(t) for i, t in clips)
    strips = [answer_strip(i, [t]) for i, t in clips]
    rows = []
    for s, strip in zip(chosen, strips, strict=True):
        write_gif(out / "samples" / f"{s.id}.gif", strip, fps)
        held = strip[-1:].expand(length - len(strip), -1, -1, -1)
        rows.append(torch.cat([strip, held]))
        rows.append(torch.zeros(length, _GAP, strip.shape[2], 3, dtype=torch.uint8))
    write_gif(out / "grid.gif", torch.cat(rows[:-1], dim=1), fps)
    page = out / "index.html"
    page.write_text(_html(chosen))
    return page


def _html(samples: Sequence[VNEPSample]) -> str:
    def esc(text: object) -> str:
        return html.escape(str(text))

    rows = []
    for s in samples:
        family = s.extra.get("family", "")
        hypothesis = s.extra.get("hypothesis")
        rows.append(
            "<tr>"
            f"<td><img src='samples/{esc(s.id)}.gif' alt='{esc(s.id)}'></td>"
            f"<td><b>{esc(s.id)}</b><br>{esc(s.task.value)} {esc(family)}"
            + (f"<br><i>hypothesis: {esc(hypothesis)}</i>" if hypothesis else "")
            + f"</td><td>{esc(s.question)}</td><td>{esc(s.reasoning or '')}</td>"
            f"<td>{esc(s.answer)}</td></tr>"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>vans data preview</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:6px;vertical-align:top;max-width:22em}"
        "img{image-rendering:pixelated}</style></head><body>"
        f"<h1>Data preview: {len(samples)} samples</h1>"
        "<p>Each animation plays the input video (blue bar), then the target next event "
        "(green bar).</p><p><img src='grid.gif' alt='all samples'></p>"
        "<table><tr><th>input | target</th><th>sample</th><th>question</th>"
        "<th>reasoning [Think]</th><th>answer [Ans]</th></tr>"
        + "".join(rows)
        + "</table></body></html>\n"
    )
