"""Peak memory of decoding a long clip: what `vans predict` reads (the reasoner's 1 fps view
and the renderer's 33 frames) against reading every frame, side by side in one run.

Writes a 40-second 1080p clip (30 fps, 1200 frames of moving gradients) into a temporary
directory, then reads it in a fresh process per view and prints each one's peak RSS
(ru_maxrss) above the interpreter's baseline, and the ratio to the every-frame read.

    python benchmarks/read_video_memory.py [--seconds 40] [--height 1080] [--width 1920]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

PROBE = """
import json, resource, sys
from vans.data.video import read_video
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
kwargs = json.loads(sys.argv[2])
video = read_video(sys.argv[1], **kwargs)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"frames": video.frames.shape[0], "mib": (peak - before) / 1024}))
"""

VIEWS = {
    "every frame": {},
    "reasoner, 1 fps": {"fps": 1.0},
    "renderer, 33 frames": {"num_frames": 33},
}


def write_clip(path: Path, seconds: float, height: int, width: int, fps: int = 30) -> None:
    ramp = np.linspace(0, 255, width, dtype=np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for i in range(int(seconds * fps)):
            row = (ramp + 4 * i) % 256
            frame = np.broadcast_to(row[None, :, None], (height, width, 3)).astype(np.uint8)
            frame = np.ascontiguousarray(frame)
            frame[:, :, 1] = (np.arange(height, dtype=np.uint32)[:, None] + i) % 256
            out.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        out.mux(stream.encode())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40.0)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--width", type=int, default=1920)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "long.mp4"
        write_clip(clip, args.seconds, args.height, args.width)
        print(f"clip: {args.seconds:g} s, {args.height}x{args.width}, 30 fps")
        peaks = {}
        for name, kwargs in VIEWS.items():
            done = subprocess.run(
                [sys.executable, "-c", PROBE, str(clip), json.dumps(kwargs)],
                capture_output=True,
                text=True,
                check=True,
            )
            peaks[name] = json.loads(done.stdout)
        full = peaks["every frame"]["mib"]
        for name, peak in peaks.items():
            print(
                f"{name:22s} {peak['frames']:5d} frames  peak RSS +{peak['mib']:8.1f} MiB  "
                f"({peak['mib'] / full:.3f} of every frame)"
            )


if __name__ == "__main__":
    main()
