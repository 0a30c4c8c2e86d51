"""Prediction latency on CPU, stage by stage, for the tiny checkpoint and a bench-size model
(`--scale paper`: the paper's models, timed on a GPU).

Two configurations of the same real classes (Qwen2.5-VL reasoner, Wan2.1 renderer) run
side by side on one toy-world input video:

- tiny:  the checkpoint `vans init-tiny` writes (`init_tiny` into a temp dir, then
  `load_checkpoint`), at its own settings (17 frames, 64x64).
- bench: tens of millions of parameters (a ~28M-parameter WanTransformer3DModel, a small
  Qwen2.5-VL at the reasoner's default pixel budget), 17 frames at 128x128, the same toy
  tokenizers.

Per configuration it prints
- video decode (`read_video`): the reasoner's 1 fps view and the renderer's 33-frame view,
  of the toy video and of the real clip `/work/shared/data/real_clips/93_172.mp4` if present;
- VLM prefill: one forward over the prompt with the video (vision tower included), and the
  vision tower alone;
- VLM decode tokens/s: `model.generate` with the Reasoner's own generation config (sampling,
  temperature 1) plus min_new_tokens = max_new_tokens, so it cannot stop early; steps are
  timestamped by a logits processor, and tokens/s covers the decode steps after prefill;
- text encode, VAE encode, seconds per denoising step (CFG on: 2 transformer calls; n = 6
  reference latents) and VAE decode, from `Renderer.render(timings=...)` and its `progress`
  callback, medians over repetitions after a warm-up render;
- the DiT's achieved FLOP/s (FlopCounterMode on one forward at the inference shape, n = 6)
  as a fraction of the float32 `torch.mm` throughput measured in the same run
  (goal >= 25% at bench scale);
- the per-step time of our sampler (`generate_latents`, n = 0) over diffusers' `WanPipeline`
  built from the same components, steps, guidance and size (goal <= 1.05): step timestamps
  from our `progress` callback and the pipeline's `callback_on_step_end`, warm-up first,
  repetitions interleaved, median ratio;
- parameter counts and the process's peak RSS so far (ru_maxrss).

`--scale paper` measures the paper's models instead: Qwen2.5-VL-3B-Instruct and
Wan2.1-T2V-1.3B (umT5-XXL included) at their published shapes with random weights
(`vans.models.paper`). Everywhere it builds them on the meta device and prints their
parameter counts against the published ones and the planned memory of inference; with CUDA
it also times one answer of `VANSPipeline` on a 9.6-s input at the paper's settings
(configs/paper/vans.yaml: 33 frames at 352x640, 50 steps, CFG 5, 6 reference latents; bf16,
the VAE float32), after a short warm-up: the caption (the reasoner's stage, up to
`sampling.max_new_tokens` tokens; random weights seldom stop earlier) and the video (the
rest of the call), against the paper's ~4 s + ~35 s, and the peak CUDA memory.

Run: `make bench` (with the toy-world benchmark) or
`python benchmarks/predict_latency.py [--quick] [--scale paper]` (about 1.5 min on 2 idle
cores; --quick takes fewer repetitions, for smoke runs). Other processes on the machine skew
every figure: the load average is printed at the start and the end.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import resource
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _paper_scale
import torch
from diffusers import (
    WanPipeline,
)
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count
from transformers import (
    LogitsProcessor,
    LogitsProcessorList,
)

from vans.cli.loading import quiet_model_libraries
from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import read_video
from vans.models.checkpoint import VANSSettings, init_tiny, load_checkpoint
from vans.models.paper import paper_models, plan_memory
from vans.models.pipeline import VANSPipeline, load_input
from vans.models.vdm import Renderer
from vans.models.vlm import Reasoner, SamplingConfig
from vans.timing import Timings

REAL_CLIP = Path("/work/shared/data/real_clips/93_172.mp4")
NUM_REFERENCE = 6
GUIDANCE = 5.0
NEW_TOKENS = 32
FLOP_GOAL = 0.25
RATIO_GOAL = 1.05


@dataclass
class Reps:
    """How many repetitions each measurement takes."""

    timing: int  # decode, prefill, generation, DiT forwards
    renders: int  # full renders (stage timings and s/step)
    render_steps: int  # denoising steps per render
    ratio: int  # interleaved (ours, WanPipeline) pairs
    ratio_steps: int
    matmul_n: int
    matmul: int


FULL = Reps(timing=5, renders=3, render_steps=5, ratio=7, ratio_steps=5, matmul_n=2048, matmul=8)
QUICK = Reps(timing=2, renders=1, render_steps=3, ratio=2, ratio_steps=3, matmul_n=1024, matmul=4)


@dataclass
class Config:
    """One configuration: both models and the settings they render at."""

    name: str
    reasoner: Reasoner
    renderer: Renderer
    settings: VANSSettings


@dataclass
class Inputs:
    """The toy input (video, question, caption to render) and the real clip, if present."""

    toy_video: Path
    question: str
    caption: str
    real_clip: Path | None


# ---------------------------------------------------------------- helpers


def median_time(fn: Callable[[], Any], reps: int, warmup: int = 1) -> float:
    """Median wall-clock seconds of `fn()` over `reps` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_times(stamps: list[float]) -> list[float]:
    """Durations between consecutive step timestamps (the first step is left out: it also
    holds whatever ran before the loop)."""
    return [b - a for a, b in itertools.pairwise(stamps)]


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def load_average() -> str:
    """The 1-minute load average: other processes on the machine skew every figure here."""
    return f"load average {os.getloadavg()[0]:.2f}"


def millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def matmul_flops(n: int, reps: int) -> float:
    """float32 `torch.mm` throughput (FLOP/s) on n x n matrices: 2 n^3 / median seconds."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / median_time(lambda: torch.mm(a, b), reps, warmup=2)


# ---------------------------------------------------------------- configurations


def tiny_config(tmp: Path) -> Config:
    """The checkpoint `init_tiny` writes, loaded back as `vans predict` would."""
    path = init_tiny(tmp / "tiny")
    reasoner, renderer, settings = load_checkpoint(path)
    return Config("tiny", reasoner, renderer, settings)


def bench_reasoner(tokenizer: Any) -> Reasoner:
    """Qwen2.5-VL with a 512-wide, 4-layer language model and a 4-block vision tower,
    watching frames at the Reasoner's default pixel budget."""
    return Reasoner.random(
        tokenizer,
        text={
            "hidden_size": 512,
            "intermediate_size": 1536,
            "num_hidden_layers": 4,
            "num_attention_heads": 8,  # head_dim 64
            "max_position_embeddings": 8192,
            "rope_scaling": {"type": "mrope", "mrope_section": [8, 12, 12]},
        },
        vision={
            "depth": 4,
            "hidden_size": 256,
            "intermediate_size": 768,
            "num_heads": 4,
            "out_hidden_size": 512,
            "window_size": 112,
            "fullatt_block_indexes": [1, 3],
        },
    )


def bench_renderer(tokenizer: Any) -> Renderer:
    """Wan2.1 with a 6-layer, 512-wide DiT (8 heads of 64), a 512-wide umT5 and a VAE a
    little wider than the tiny one."""
    return Renderer.random(
        tokenizer,
        transformer={
            "num_attention_heads": 8,
            "attention_head_dim": 64,
            "ffn_dim": 2048,
            "num_layers": 6,
        },
        vae={"base_dim": 8, "dim_mult": [1, 2, 2, 2]},
        text_encoder={
            "d_model": 512,
            "d_kv": 64,
            "d_ff": 1024,
            "num_heads": 8,
            "relative_attention_num_buckets": 32,
        },
    )


def bench_config(tiny: Config) -> Config:
    """The bench models, with the tiny checkpoint's trained toy tokenizers."""
    settings = VANSSettings(num_frames=17, height=128, width=128)
    return Config(
        "bench",
        bench_reasoner(tiny.reasoner.tokenizer),
        bench_renderer(tiny.renderer.tokenizer),
        settings,
    )


def make_inputs(tmp: Path) -> Inputs:
    manifest = write_toyworld(ToyWorldConfig(num=1), tmp / "toyworld")
    sample = load_manifest(manifest)[0]
    real = REAL_CLIP if REAL_CLIP.is_file() else None
    return Inputs(sample.input.path, sample.question, sample.answer, real)


# ---------------------------------------------------------------- measurements


def measure_params(cfg: Config) -> dict[str, float]:
    r = cfg.renderer
    out = {
        "p_vlm": millions(cfg.reasoner.model),
        "p_vision": millions(cfg.reasoner.model.model.visual),
        "p_dit": millions(r.transformer),
        "p_text": millions(r.text_encoder),
        "p_vae": millions(r.vae),
    }
    out["p_total"] = out["p_vlm"] + out["p_dit"] + out["p_text"] + out["p_vae"]
    return out


def measure_decode(cfg: Config, inputs: Inputs, reps: int) -> dict[str, float]:
    s = cfg.settings
    out = {}
    clips = {"toy": inputs.toy_video, "real": inputs.real_clip}
    for tag, path in clips.items():
        if path is None:
            continue
        out[f"dec_{tag}_vlm"] = median_time(lambda p=path: read_video(p, fps=s.vlm_fps), reps)
        out[f"dec_{tag}_vdm"] = median_time(
            lambda p=path: read_video(p, num_frames=s.reference_video_frames), reps
        )
    return out


class StepClock(LogitsProcessor):
    """Timestamps every generation step (called once per forward, after it)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self.stamps.append(time.perf_counter())
        return scores


def measure_reasoner(cfg: Config, frames: torch.Tensor, question: str, reps: int) -> dict:
    """Prefill (vision tower + language model, one forward) and decode tokens/s."""
    reasoner = cfg.reasoner
    inputs = reasoner.prepare([frames], [question])
    model = reasoner.model
    prefill = median_time(lambda: model(**inputs, logits_to_keep=1), reps)
    vision = median_time(
        lambda: model.model.get_video_features(
            inputs["pixel_values_videos"], inputs["video_grid_thw"]
        ),
        reps,
    )
    # The Reasoner's own generation config for sampling, forced to exactly NEW_TOKENS tokens.
    gen_config = reasoner._generation_config(SamplingConfig(max_new_tokens=NEW_TOKENS), 1)
    gen_config.min_new_tokens = NEW_TOKENS
    rates, firsts = [], []
    for i in range(reps + 1):  # the first run is a warm-up
        clock = StepClock()
        start = time.perf_counter()
        out = model.generate(
            **inputs, generation_config=gen_config, logits_processor=LogitsProcessorList([clock])
        )
        new = out.shape[1] - inputs["input_ids"].shape[1]
        if new != NEW_TOKENS or len(clock.stamps) != NEW_TOKENS:
            raise RuntimeError(f"generated {new} tokens, expected {NEW_TOKENS}")
        if i:
            rates.append((NEW_TOKENS - 1) / (clock.stamps[-1] - clock.stamps[0]))
            firsts.append(clock.stamps[0] - start)
    return {
        "vlm_video_tokens": int((inputs["input_ids"] == reasoner.video_token_id).sum()),
        "vlm_prompt_tokens": inputs["input_ids"].shape[1],
        "vlm_prefill": prefill,
        "vlm_vision": vision,
        "vlm_first_token": statistics.median(firsts),
        "vlm_tok_s": statistics.median(rates),
    }


def measure_render(cfg: Config, frames: torch.Tensor, caption: str, reps: Reps) -> dict:
    """Stage timings of `Renderer.render` (n = 6, CFG) and seconds per denoising step."""
    s = cfg.settings

    def render(steps: int) -> tuple[Timings, list[float]]:
        timings, stamps = Timings(), []
        cfg.renderer.render(
            [caption],
            reference_frames=frames,
            num_reference_frames=NUM_REFERENCE,
            num_frames=s.num_frames,
            height=s.height,
            width=s.width,
            steps=steps,
            guidance_scale=GUIDANCE,
            progress=lambda done, total: stamps.append(time.perf_counter()),
            timings=timings,
        )
        return timings, stamps

    render(2)  # warm-up
    runs = [render(reps.render_steps) for _ in range(reps.renders)]
    steps = [d for _, stamps in runs for d in step_times(stamps)]
    return {
        "text_encode": statistics.median(t["text_encode"] for t, _ in runs),
        "vae_encode": statistics.median(t["vae_encode"] for t, _ in runs),
        "step": statistics.median(steps),
        "vae_decode": statistics.median(t["vae_decode"] for t, _ in runs),
    }


def cpu_flash_attention_flops(
    q_shape: torch.Size, k_shape: torch.Size, v_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """FLOPs of torch's CPU flash-attention kernel, which FlopCounterMode does not know:
    the two matmuls of attention, as it counts for the GPU SDPA kernels."""
    return sdpa_flop_count(q_shape, k_shape, v_shape)


def dit_inputs(renderer: Renderer, settings: VANSSettings) -> dict[str, torch.Tensor]:
    """One transformer call at the inference shape: n = 6 clean reference latents in front
    of the noisy latents, umT5 embeddings of 512 tokens."""
    t = NUM_REFERENCE + renderer.num_latent_frames(settings.num_frames)
    h, w = settings.height // renderer.spatial_scale, settings.width // renderer.spatial_scale
    text_dim = renderer.transformer.config.text_dim
    return {
        "hidden_states": torch.randn(1, renderer.latent_channels, t, h, w),
        "timestep": torch.tensor([500.0]),
        "encoder_hidden_states": torch.randn(1, 512, text_dim),
        "return_dict": False,
    }


def measure_dit(cfg: Config, reps: int) -> dict:
    """FLOPs of one DiT forward (CPU flash attention counted like the other SDPA kernels)
    and its median wall-clock time."""
    transformer = cfg.renderer.transformer
    inputs = dit_inputs(cfg.renderer, cfg.settings)
    patch = transformer.config.patch_size
    shape = inputs["hidden_states"].shape
    tokens = shape[2] // patch[0] * (shape[3] // patch[1]) * (shape[4] // patch[2])
    cpu_flash_attention = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    counter = FlopCounterMode(
        display=False,
        custom_mapping={cpu_flash_attention: cpu_flash_attention_flops},
    )
    with counter:
        transformer(**inputs)
    seconds = median_time(lambda: transformer(**inputs), reps)
    return {"dit_tokens": tokens, "dit_flops": counter.get_total_flops(), "dit_forward": seconds}


def measure_ratio(cfg: Config, caption: str, reps: Reps) -> dict:
    """Per-step time of our sampler (n = 0) over WanPipeline's, same components and args."""
    r, s = cfg.renderer, cfg.settings
    pipe = WanPipeline(
        tokenizer=r.tokenizer,
        text_encoder=r.text_encoder,
        vae=r.vae,
        transformer=r.transformer,
        scheduler=r.scheduler,
    )
    pipe.set_progress_bar_config(disable=True)
    size = {"num_frames": s.num_frames, "height": s.height, "width": s.width}

    def ours(steps: int) -> float:
        stamps: list[float] = []
        r.generate_latents(
            [caption],
            num_reference_frames=0,
            steps=steps,
            guidance_scale=GUIDANCE,
            seed=0,
            progress=lambda done, total: stamps.append(time.perf_counter()),
            **size,
        )
        return statistics.mean(step_times(stamps))

    def theirs(steps: int) -> float:
        stamps: list[float] = []

        def on_step(pipe: Any, i: int, t: Any, kwargs: dict) -> dict:
            stamps.append(time.perf_counter())
            return {}

        pipe(
            caption,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            generator=torch.Generator().manual_seed(0),
            output_type="latent",
            callback_on_step_end=on_step,
            **size,
        )
        return statistics.mean(step_times(stamps))

    ours(2)  # warm-up
    theirs(2)
    ratios, ours_s, theirs_s = [], [], []
    for i in range(reps.ratio):
        # Alternate who goes first, so a slow drift of the machine favours neither.
        if i % 2 == 0:
            a, b = ours(reps.ratio_steps), theirs(reps.ratio_steps)
        else:
            b, a = theirs(reps.ratio_steps), ours(reps.ratio_steps)
        ours_s.append(a)
        theirs_s.append(b)
        ratios.append(a / b)
    return {
        "ratio": statistics.median(ratios),
        "ratio_ours": statistics.median(ours_s),
        "ratio_pipe": statistics.median(theirs_s),
    }


def measure(cfg: Config, inputs: Inputs, reps: Reps, matmul: list[float]) -> dict:
    """Every figure of one configuration; `matmul` collects the FLOP/s measurements."""
    s = cfg.settings
    result: dict[str, Any] = measure_params(cfg)
    print(f"[{cfg.name}] decode", flush=True)
    result |= measure_decode(cfg, inputs, reps.timing)
    vlm_frames = read_video(inputs.toy_video, fps=s.vlm_fps).frames
    vdm_frames = read_video(inputs.toy_video, num_frames=s.reference_video_frames).frames
    print(f"[{cfg.name}] reasoner", flush=True)
    result |= measure_reasoner(cfg, vlm_frames, inputs.question, reps.timing)
    print(f"[{cfg.name}] render", flush=True)
    result |= measure_render(cfg, vdm_frames, inputs.caption, reps)
    print(f"[{cfg.name}] DiT FLOPs", flush=True)
    matmul.append(matmul_flops(reps.matmul_n, reps.matmul))
    result |= measure_dit(cfg, reps.timing)
    print(f"[{cfg.name}] sampler vs WanPipeline", flush=True)
    result |= measure_ratio(cfg, inputs.caption, reps)
    result["rss"] = peak_rss_mb()
    return result


# ---------------------------------------------------------------- report


def fmt_s(x: float) -> str:
    return f"{x * 1e3:.1f} ms" if x < 1 else f"{x:.2f} s"


def fmt_m(x: float) -> str:
    return f"{x:.2f}M" if x < 10 else f"{x:.1f}M"


def fmt_1(x: float) -> str:
    return f"{x:.1f}"


def fmt_g(x: float) -> str:
    return f"{x:.3g}"


def fmt_3(x: float) -> str:
    return f"{x:.3f}"


def fmt_pct(x: float) -> str:
    return f"{x:.1%}"


TABLE: list[tuple[str, str, Callable[[Any], str]]] = [
    ("params: reasoner (Qwen2.5-VL)", "p_vlm", fmt_m),
    ("  of which vision tower", "p_vision", fmt_m),
    ("params: DiT (WanTransformer3DModel)", "p_dit", fmt_m),
    ("params: text encoder (umT5)", "p_text", fmt_m),
    ("params: VAE (AutoencoderKLWan)", "p_vae", fmt_m),
    ("params: total", "p_total", fmt_m),
    ("output video (frames x H x W)", "size", str),
    ("decode toy video, VLM view (1 fps)", "dec_toy_vlm", fmt_s),
    ("decode toy video, VDM view (33 fr)", "dec_toy_vdm", fmt_s),
    ("decode real clip, VLM view (1 fps)", "dec_real_vlm", fmt_s),
    ("decode real clip, VDM view (33 fr)", "dec_real_vdm", fmt_s),
    ("VLM prompt tokens (of which video)", "vlm_tokens", str),
    ("VLM prefill (vision + LM, 1 forward)", "vlm_prefill", fmt_s),
    ("  of which vision tower alone", "vlm_vision", fmt_s),
    ("VLM time to first token (generate)", "vlm_first_token", fmt_s),
    (f"VLM decode tokens/s ({NEW_TOKENS} new, forced)", "vlm_tok_s", fmt_1),
    ("text encode (umT5, cond + neg)", "text_encode", fmt_s),
    ("VAE encode (33 fr, incl. resize)", "vae_encode", fmt_s),
    (f"denoise per step (CFG, n={NUM_REFERENCE})", "step", fmt_s),
    ("VAE decode (+ to uint8)", "vae_decode", fmt_s),
    (f"DiT tokens per forward (n={NUM_REFERENCE})", "dit_tokens", str),
    ("DiT forward", "dit_forward", fmt_s),
    ("DiT GFLOP per forward", "dit_gflop", fmt_g),
    ("DiT achieved GFLOP/s", "dit_gflops", fmt_1),
    ("DiT fraction of matmul peak", "dit_fraction", fmt_pct),
    ("n=0 per step: ours", "ratio_ours", fmt_s),
    ("n=0 per step: WanPipeline", "ratio_pipe", fmt_s),
    ("n=0 per-step ratio ours/WanPipeline", "ratio", fmt_3),
    ("peak RSS so far (MB)", "rss", lambda x: f"{x:.0f}"),
]
"""(label, result key, formatter) of every row of the final table; a missing key is n/a."""


NOTES = f"""\
notes: decode does not depend on the model (measured again per column). VLM decode
tokens/s: model.generate with the Reasoner's generation config (sampling, temperature 1)
plus min_new_tokens = max_new_tokens = {NEW_TOKENS}, timed by a logits processor over the
{NEW_TOKENS - 1} steps after prefill. Renderer stages: medians of Renderer.render(timings=...)
runs; per step = median gap between progress callbacks. Peak RSS is the process peak so
far (ru_maxrss): the bench column includes everything measured before it."""


def derive(cfg: Config, r: dict[str, Any], peak: float) -> None:
    """Add the figures computed from others (the FLOP fraction needs the matmul peak)."""
    s = cfg.settings
    r["size"] = f"{s.num_frames}x{s.height}x{s.width}"
    r["vlm_tokens"] = f"{r['vlm_prompt_tokens']} ({r['vlm_video_tokens']})"
    r["dit_gflop"] = r["dit_flops"] / 1e9
    r["dit_gflops"] = r["dit_flops"] / r["dit_forward"] / 1e9
    r["dit_fraction"] = r["dit_flops"] / r["dit_forward"] / peak


def print_table(cfgs: list[Config], results: list[dict[str, Any]]) -> None:
    cells = [[fmt(r[key]) if key in r else "n/a" for r in results] for _, key, fmt in TABLE]
    label_width = max(len(label) for label, _, _ in TABLE)
    widths = [max(len(c.name), *(len(row[i]) for row in cells)) for i, c in enumerate(cfgs)]

    def line(first: str, row: list[str]) -> str:
        return f"{first:<{label_width}}" + "".join(
            f"  {x:>{w}}" for x, w in zip(row, widths, strict=True)
        )

    print()
    print(line("", [c.name for c in cfgs]))
    for (label, _, _), row in zip(TABLE, cells, strict=True):
        print(line(label, row))


def report(cfgs: list[Config], results: list[dict[str, Any]], matmul: list[float]) -> None:
    peak = max(matmul)
    for cfg, r in zip(cfgs, results, strict=True):
        derive(cfg, r, peak)
    print_table(cfgs, results)
    print()
    measured = ", ".join(f"{m / 1e9:.1f}" for m in matmul)
    print(f"float32 torch.mm GFLOP/s measured: {measured}; the peak {peak / 1e9:.1f} is used")
    for cfg, r in zip(cfgs, results, strict=True):
        verdict = "met" if r["ratio"] <= RATIO_GOAL else "NOT met"
        line = f"{cfg.name}: sampler/WanPipeline per-step ratio {r['ratio']:.3f} "
        line += f"(goal <= {RATIO_GOAL}) -> {verdict}"
        if cfg.name == "bench":
            verdict = "met" if r["dit_fraction"] >= FLOP_GOAL else "NOT met"
            line += f"; DiT at {r['dit_fraction']:.1%} of matmul peak "
            line += f"(goal >= {FLOP_GOAL:.0%}) -> {verdict}"
        print(line)
    print(NOTES)


# ---------------------------------------------------------------- paper scale

PAPER_CAPTION_S = 4.0
PAPER_VIDEO_S = 35.0
"""The paper's inference time on a GPU: ~4 s for the caption, ~35 s for the video."""


def paper_latency(tmp: Path) -> None:
    """`--scale paper` on a CUDA device: one timed answer after a warm-up (module docstring)."""
    settings = _paper_scale.paper_settings()
    sample = load_manifest(_paper_scale.paper_manifest(tmp))[0]
    clip = load_input(
        settings, video=sample.input.path, start=sample.input.start, end=sample.input.end
    )
    reasoner, renderer = paper_models("cuda")
    renderer.set_shift(settings.flow_shift)  # as load_checkpoint does
    warmup = dataclasses.replace(
        settings, steps=2, sampling=dataclasses.replace(settings.sampling, max_new_tokens=8)
    )
    with torch.inference_mode():
        VANSPipeline(reasoner, renderer, warmup)(sample.question, clip=clip)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        timings = Timings()
        start = time.perf_counter()
        VANSPipeline(reasoner, renderer, settings)(sample.question, clip=clip, timings=timings)
        torch.cuda.synchronize()  # the video's kernels may still be queued
        total = time.perf_counter() - start
    # "reason" ends once the answer is text, i.e. after the GPU has finished writing it.
    caption, video = timings["reason"], total - timings["reason"]
    s = settings
    print(f"on {torch.cuda.get_device_name()}, bf16 (the VAE float32):")
    print(
        f"  caption {caption:6.1f} s   (paper ~{PAPER_CAPTION_S:.0f} s): input "
        f"{len(clip.vlm_frames)} frames at {s.vlm_fps:g} fps, up to "
        f"{s.sampling.max_new_tokens} new tokens"
    )
    print(
        f"  video   {video:6.1f} s   (paper ~{PAPER_VIDEO_S:.0f} s): {s.num_frames} frames at "
        f"{s.height}x{s.width}, {s.steps} steps, CFG {s.guidance_scale:g}, "
        f"{s.num_reference_frames} reference latents"
    )
    print(
        f"  peak CUDA memory {_paper_scale.gib(torch.cuda.max_memory_allocated())} of "
        f"{_paper_scale.cuda_total()}"
    )


def paper_scale() -> None:
    """`--scale paper`: sizes and planned memory everywhere, latency on a CUDA device."""
    counts = _paper_scale.meta_counts()
    _paper_scale.print_sizes(counts)
    plan = plan_memory(counts)
    print(
        f"planned memory of inference: {_paper_scale.gib(plan.inference)} of parameters "
        "(bf16, the VAE float32), activations excluded"
    )
    if not torch.cuda.is_available():
        print("no CUDA device: caption and video latency are measured on a GPU only")
        return
    with tempfile.TemporaryDirectory() as tmp_dir:
        paper_latency(Path(tmp_dir))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument(
        "--scale",
        choices=("toy", "paper"),
        default="toy",
        help="toy: the tiny and bench models on CPU; paper: the paper's models (docstring)",
    )
    args = parser.parse_args()
    quiet_model_libraries()
    if args.scale == "paper":
        paper_scale()
        return
    reps = QUICK if args.quick else FULL
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(cores or 1)
    warnings.filterwarnings("ignore", category=UserWarning)
    started = time.perf_counter()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads "
        f"({cores} cores), {'quick' if args.quick else 'full'} mode, {load_average()}"
    )

    matmul = [matmul_flops(reps.matmul_n, reps.matmul)]
    with tempfile.TemporaryDirectory() as tmp_dir, torch.inference_mode():
        tmp = Path(tmp_dir)
        inputs = make_inputs(tmp)
        print(f"input: {inputs.toy_video.name}, question: {inputs.question!r}")
        print(f"real clip: {inputs.real_clip or 'absent (decode rows n/a)'}")
        tiny = tiny_config(tmp)
        cfgs, results = [tiny], [measure(tiny, inputs, reps, matmul)]
        bench = bench_config(tiny)
        cfgs.append(bench)
        results.append(measure(bench, inputs, reps, matmul))
    report(cfgs, results, matmul)
    print(f"total benchmark time: {time.perf_counter() - started:.0f} s, {load_average()}")


if __name__ == "__main__":
    main()
