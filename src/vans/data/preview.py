"""A look at a data set: an animated GIF grid of inputs and targets and an HTML page.

Each sample is shown as two panels: the input clip plays on the left, then the target
(the next event) plays on the right while the input holds its last frame, so the order in
time is visible. Works on any manifest, toy world or real video.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path

import torch

from vans.data.schema import VideoRef, VNEPSample
from vans.data.video import read_video, write_gif

_GAP = 4
_BAR = 3
_INPUT_BAR = (60, 120, 255)
_TARGET_BAR = (60, 200, 90)


def _clip(ref: VideoRef, fps: float, size: tuple[int, int]) -> torch.Tensor:
    return read_video(ref.path, start=ref.start, end=ref.end, fps=fps, size=size).frames


def _strip(inp: torch.Tensor, target: torch.Tensor, length: int) -> torch.Tensor:
    """(length, H + bar, 2W + gap, 3): input plays, then target; the playing side is marked."""
    t_in, h, w, _ = inp.shape
    out = torch.zeros(length, h + _BAR, 2 * w + _GAP, 3, dtype=torch.uint8)
    for t in range(length):
        out[t, _BAR:, :w] = inp[min(t, t_in - 1)]
        if t < t_in:
            out[t, :_BAR, :w] = torch.tensor(_INPUT_BAR, dtype=torch.uint8)
            out[t, _BAR:, w + _GAP :] = target[0] // 3  # dimmed: not yet happened
        else:
            out[t, :_BAR, w + _GAP :] = torch.tensor(_TARGET_BAR, dtype=torch.uint8)
            out[t, _BAR:, w + _GAP :] = target[min(t - t_in, len(target) - 1)]
    return out


def write_preview(
    samples: Sequence[VNEPSample],
    out_dir: str | Path,
    *,
    fps: float = 8.0,
    cell: tuple[int, int] = (128, 128),
    max_samples: int = 12,
) -> Path:
    """Write `grid.gif`, one GIF per sample and `index.html` into `out_dir`; return the page."""
    out = Path(out_dir)
    (out / "samples").mkdir(parents=True, exist_ok=True)
    chosen = list(samples)[:max_samples]
    clips = [(_clip(s.input, fps, cell), _clip(s.target, fps, cell)) for s in chosen]
    length = max(len(i) + len(t) for i, t in clips)
    strips = [_strip(i, t, len(i) + len(t)) for i, t in clips]
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
