"""Joint-GRPO Stage 1 on the tiny models: where a step's time goes, and our GRPO engine
against trl's GRPOTrainer (`--scale paper`: the memory of both stages' steps at the paper's
scale, measured on a GPU).

Setup (in a temporary directory): the tiny checkpoint (`init_tiny`) with a fresh LoRA on
the reasoner (what SFT-VLM leaves, as in tests/test_joint_grpo_vlm.py), rendering at
`--frames` frames of `--size`x`--size` (default 17 at 64x64, the tiny settings); a toy-world
data set; an untrained toy embedder. One torch thread by default: on a shared 2-core machine
more threads make the figures swing from run to run. Numbers only, no assertions: other
processes skew them (the load average is printed at the start and the end).

Part 1, the Stage-1 step (`JointGRPOVLMTask` from `build_joint_grpo_vlm_task`, G=8, reward
videos with 10 denoising steps): a warm-up step, then `--repeats` steps of one prompt each,
`task.loss` + backward. Printed: the median seconds of each phase the task logs (sampling;
reward videos; scoring = r_f, r_t1, r_v1; update = reference and policy log-probabilities,
loss, plus the backward pass) and of the whole step, and the mean number of distinct
captions rendered per group (`reward_videos/unique`).

Part 2, the GRPO engine: ours against trl's `GRPOTrainer`, on copies of the same reasoner
(same LoRA weights), the same toy prompts in the same order, G=8, the same max_new_tokens,
temperature, beta, clip epsilon, "grpo" loss, AdamW settings and gradient clipping, and a
text-only reward both can compute (r_f + r_t1, each z-scored within its group then summed),
so the comparison is the engine, not the renderer. Not compared: reward videos (part 1
times them), vLLM, several processes, and trl's logging (switched off).

- ours: `Reasoner.generate_completions` samples G answers to the video (encoded once),
  rewards, advantages (`rl.advantages.segment_advantages`), reference and policy per-token
  log-probabilities by `Reasoner.completion_logprobs` (the video runs through the vision
  tower inside the loss forward), `rl.grpo.grpo_loss`, backward, clipping, AdamW step.
- trl: `trl.GRPOTrainer` with video prompts. transformers' Qwen2.5-VL video processor needs
  torchvision, which is broken here (docs/paper_facts.md#environment), so trl's processor
  gets a video processor running our plain-torch `preprocess_video` (`_trl_baseline.py`);
  its prompt token ids are checked to equal ours. trl encodes the video in `generate`, but
  its loss forward gets no `pixel_values_videos`
  (docs/paper_facts.md#pitfalls-seen-in-other-implementations): a hook on the vision tower
  counts its calls with and without gradients in each engine.

The engines alternate step by step (one of ours before each of trl's) so that machine load
hits both alike; after `--warmup` steps each, `--repeats` steps each are timed and the
medians printed as steps/s.

`--scale paper` measures memory at the paper's scale instead, with Qwen2.5-VL-3B-Instruct
and Wan2.1-T2V-1.3B at their published shapes and random weights (`vans.models.paper`).
Everywhere it prints the planned memory of a Stage-1 and a Stage-2 step (parameters and
optimizer state, from the models built on the meta device); with CUDA it also takes one
optimizer step of each stage on one prompt (G = 8) and prints its peak CUDA memory and
time. The steps run the stages' own tasks (`JointGRPOVLMTask`, `JointGRPOVDMTask`) with
configs/paper/joint_grpo_stage{1,2}.yaml (reward videos and rollouts at 33 frames of
352x640, 10 steps, CFG 5) on a toy-world prompt drawn at 352x640; every part is on the GPU
in bf16 except what trains (the LoRA, then the DiT: float32 under bf16 autocast, as the
training loop keeps it) and the VAE (float32); the reward embedder is the tiny CLIP
(`CLIPEmbedder.tiny`; ViT-B/32's 151M parameters would add ~0.3 GiB). Stage 2 takes the
first anchor caption (`anchor_min_rouge=0`): a random reasoner never reaches ROUGE-L 0.6.

Run: `python benchmarks/bench_joint_grpo.py [--repeats 10] [--threads 1] [--frames 5 --size 32]`
(under a minute at the defaults), or `... --scale paper`.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import statistics
import tempfile
import textwrap
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _paper_scale
import torch
from accelerate.utils import send_to_device

from vans.cli.loading import quiet_model_libraries
from vans.data.manifest import load_manifest
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.evaluation.embedders import CLIPEmbedder, load_embedder
from vans.evaluation.toy_embedder import ToyEmbedder, build_vocab
from vans.models.checkpoint import init_tiny, load_checkpoint, load_settings, save_checkpoint
from vans.models.paper import FP32_BYTES, paper_models, plan_memory
from vans.models.vlm import LORA_DIR, Reasoner, SamplingConfig
from vans.rewards.vans import RewardFunction, RewardInputs, caption_rewards, format_rewards
from vans.rl.advantages import segment_advantages
from vans.rl.config import GRPOConfig, RewardVideoConfig
from vans.rl.grpo import grpo_loss
from vans.rl.reference import ReferenceWeights
from vans.rl.rollout import Prompt
from vans.timing import Timings
from vans.training.config import TrainConfig, load_config
from vans.training.joint_grpo import prompt_items
from vans.training.joint_grpo_vdm import JointGRPOVDMConfig, JointGRPOVDMTask
from vans.training.joint_grpo_vlm import (
    JointGRPOVLMConfig,
    JointGRPOVLMTask,
    build_joint_grpo_vlm_task,
)
from vans.training.loop import adamw
from vans.training.task import TrainTask

G = 8
REWARD_VIDEO_STEPS = 10
PHASES = ("sampling", "reward_videos", "scoring", "update")

TEXT_REWARDS = [
    RewardFunction("r_f", lambda x: format_rewards(x.completions)),
    RewardFunction("r_t1", lambda x: caption_rewards(x.completions, x.truth_caption)),
]
"""Stage 1's r_f and r_t1 without r_v1 (the rewards trl computes too)."""


@dataclass
class Setup:
    """What both parts start from, written into a temporary directory."""

    checkpoint: Path
    """The tiny checkpoint with a LoRA adapter and the benchmark's render settings."""
    manifest: Path
    """The toy-world training manifest."""
    embedder: Path
    """An untrained toy embedder (r_v1's)."""


def build_setup(root: Path, frames: int, size: int) -> Setup:
    """The tiny checkpoint with a fresh LoRA (as SFT-VLM leaves it) rendering `frames`
    frames at `size`x`size`, toy-world prompts at that size and an untrained toy embedder."""
    reasoner, renderer, settings = load_checkpoint(init_tiny(root / "tiny", seed=0))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        reasoner.add_lora()
    settings = dataclasses.replace(settings, num_frames=frames, height=size, width=size)
    checkpoint = save_checkpoint(root / "sft", reasoner, renderer, settings)
    toy = ToyWorldConfig(num=8, seed=0, size=(size, size), input_frames=33, target_frames=17)
    manifest = write_toyworld(toy, root / "toy")
    captions = [json.loads(line)["answer"] for line in manifest.read_text().splitlines()]
    embedder = root / "embedder"
    ToyEmbedder.untrained(build_vocab(captions)).save_pretrained(embedder)
    return Setup(checkpoint, manifest, embedder)


# --------------------------------------------------------------------------- part 1


def stage1_breakdown(setup: Setup, repeats: int) -> None:
    config = JointGRPOVLMConfig(
        checkpoint=str(setup.checkpoint),
        train_manifest=str(setup.manifest),
        embedder=str(setup.embedder),
        grpo=GRPOConfig(group_size=G),
        reward_videos=RewardVideoConfig(steps=REWARD_VIDEO_STEPS),
        cache_items=True,
    )
    task = build_joint_grpo_vlm_task(config)
    s = task.settings
    print(
        f"\n== Part 1: Stage-1 step (JointGRPOVLMTask), G={G}, {len(task.train_dataset())} toy "
        f"prompts, max_new_tokens {task.sampling.max_new_tokens}, reward videos "
        f"{s.num_frames} frames at {s.height}x{s.width}, {REWARD_VIDEO_STEPS} steps, CFG "
        f"{s.guidance_scale}"
    )
    items = task.train_dataset()
    task.model.train()
    rows: list[dict[str, float]] = []
    for step in range(1 + repeats):  # step 0 is the warm-up
        batch = task.collate([items[step % len(items)]], [step])
        start = time.perf_counter()
        out = task.loss(task.model, batch)
        backward = time.perf_counter()
        out["loss"].backward()
        end = time.perf_counter()
        task.model.zero_grad(set_to_none=True)
        row = {phase: float(out[f"time/{phase}"]) for phase in PHASES}
        row["update"] += end - backward
        row["total"] = end - start
        row["unique"] = float(out["reward_videos/unique"])
        if step:
            rows.append(row)
    total = statistics.median([r["total"] for r in rows])
    print(f"median seconds per step over {repeats} steps (one prompt, {G} rollouts):")
    for phase in (*PHASES, "total"):
        value = statistics.median([r[phase] for r in rows])
        note = " (incl. backward)" if phase == "update" else ""
        print(f"  {phase:<14} {value:7.3f} s  {100 * value / total:5.1f}%{note}")
    unique = statistics.mean(r["unique"] for r in rows)
    print(f"  reward_videos/unique (mean distinct captions rendered per group): {unique:.2f}")


# --------------------------------------------------------------------------- part 2


class VisionCalls:
    """Counts the vision tower's forward calls, with and without gradients, and the patch
    rows it encodes."""

    def __init__(self, visual: torch.nn.Module) -> None:
        self.grad = self.no_grad = self.patches = 0
        visual.register_forward_hook(self._hook)

    def _hook(self, module: torch.nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if torch.is_grad_enabled():
            self.grad += 1
        else:
            self.no_grad += 1
        self.patches += int(args[0].shape[0])

    def per_step(self, steps: int) -> str:
        return (
            f"{self.no_grad / steps:g} without grad + {self.grad / steps:g} with grad "
            f"(loss forward), {self.patches / steps:.0f} patch rows encoded"
        )


class OursGRPO:
    """One GRPO step of the reasoner with `TEXT_REWARDS`, from the project's functions."""

    def __init__(
        self, reasoner: Reasoner, grpo: GRPOConfig, sampling: SamplingConfig, train: TrainConfig
    ) -> None:
        self.reasoner = reasoner
        self.grpo = grpo
        self.sampling = sampling
        self.train = train
        self.params = [p for p in reasoner.model.parameters() if p.requires_grad]
        self.reference = ReferenceWeights(reasoner.model)
        self.optimizer = torch.optim.AdamW(
            self.params,
            lr=train.lr,
            betas=train.adam_betas,
            eps=train.adam_eps,
            weight_decay=train.weight_decay,
        )

    def step(self, prompt: Prompt, seed: int, timings: Timings) -> list[int]:
        """Sample, score, update (phases timed into `timings`); returns the completions'
        token counts."""
        r = self.reasoner
        video, question, fps = prompt.vlm_frames, prompt.question, prompt.vlm_fps
        with timings.stage("sampling"):
            completions = r.generate_completions(
                video, [question], num_samples=self.grpo.group_size, sampling=self.sampling,
                seed=seed, fps=fps,
            )[0]  # fmt: skip
        with timings.stage("scoring"):
            texts = [c.text for c in completions]
            inputs = RewardInputs(completions=texts, truth_caption=prompt.answer)
            rewards = {fn.name: fn(inputs) for fn in TEXT_REWARDS}
            advantages = segment_advantages(rewards, TEXT_REWARDS, self.grpo, by_segment=False)
        ids = [c.token_ids for c in completions]

        def logprobs() -> tuple[torch.Tensor, torch.Tensor]:
            return r.completion_logprobs(
                video, question, ids, temperature=self.sampling.temperature, fps=fps
            )

        with timings.stage("reference"), torch.no_grad(), self.reference.active():
            ref_logp, _ = logprobs()
        with timings.stage("update"):
            logp, mask = logprobs()
            loss, _ = grpo_loss(
                logp,
                None,
                ref_logp,
                advantages["all"],
                mask,
                eps_low=self.grpo.clip_range,
                eps_high=self.grpo.eps_high,
                beta=self.grpo.beta,
                loss_type="grpo",
            )
            loss.backward()
            if self.train.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.params, self.train.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        return [len(c.token_ids) for c in completions]


def ours_vs_trl(setup: Setup, warmup: int, repeats: int, root: Path) -> None:
    import _trl_baseline as baseline  # trl is imported only here (slow)
    from transformers import TrainerCallback

    start, settings = setup.checkpoint, load_settings(setup.checkpoint)
    ours = Reasoner.from_pretrained(
        start / "vlm", lora=start / "vlm" / LORA_DIR, trainable_lora=True, fps=settings.vlm_fps
    )
    theirs = copy.deepcopy(ours.peft_model)  # same weights, same LoRA init
    prompts = list(prompt_items(load_manifest(setup.manifest), settings, ours.fps, cache=True))
    grpo, train = GRPOConfig(group_size=G), TrainConfig()
    sampling = SamplingConfig(temperature=1.0, max_new_tokens=settings.sampling.max_new_tokens)

    processor = baseline.build_processor(ours, {p.id: p.vlm_frames for p in prompts})
    first = prompts[0]
    conversation = baseline.prompt_dataset([first], ours.system_prompt)[0]["prompt"]
    tokens = processor.apply_chat_template(
        conversation=[conversation], add_generation_prompt=True, tokenize=True, return_dict=True
    )
    same = tokens["input_ids"][0] == ours.prompt_ids(first.question, tokens["video_grid_thw"])

    engine = OursGRPO(ours, grpo, sampling, train)
    ours_calls = VisionCalls(ours.model.model.visual)
    trl_calls = VisionCalls(theirs.get_base_model().model.visual)
    ours_seconds: list[float] = []
    ours_phases: list[Timings] = []
    ours_tokens: list[int] = []
    trl_seconds: list[float] = []
    trl_tokens: list[int] = []

    class Alternate(TrainerCallback):
        """Runs one step of ours before each of trl's, and times trl's steps (generation,
        rewards, loss, backward and optimiser step all happen between these two events)."""

        def on_step_begin(self, args, state, control, **kwargs):
            step = state.global_step  # trl takes the prompts in order (shuffle off)
            ours_phases.append(Timings())
            tic = time.perf_counter()
            ours_tokens.extend(engine.step(prompts[step % len(prompts)], step, ours_phases[-1]))
            ours_seconds.append(time.perf_counter() - tic)
            self.tic = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            trl_seconds.append(time.perf_counter() - self.tic)

    ours.model.train()  # LoRA dropout on, as in trl's training step
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' deprecation notices on trl's arguments
        trainer = baseline.build_trainer(
            theirs,
            processor,
            baseline.prompt_dataset(prompts, ours.system_prompt),
            grpo=grpo,
            sampling=sampling,
            train=train,
            steps=warmup + repeats,
            out_dir=root / "trl",
            callbacks=[Alternate()],
            reward_hook=lambda ids: trl_tokens.extend(len(x) for x in ids),
        )
        trainer.train()

    steps = warmup + repeats
    ours_s = statistics.median(ours_seconds[warmup:])
    trl_s = statistics.median(trl_seconds[warmup:])
    print(
        f"\n== Part 2: GRPO engine, ours vs trl {baseline.trl.__version__} GRPOTrainer: G={G}, "
        f"max_new_tokens {sampling.max_new_tokens}, temperature {sampling.temperature}, beta "
        f"{grpo.beta}, epsilon {grpo.clip_range}, reward r_f + r_t1, {len(prompts)} toy prompts"
    )
    print(
        "trl input: (a) video prompts. Qwen2_5_VLProcessor with a torch-only video processor "
        "(vans preprocess_video); its prompt token ids equal Reasoner.prompt_ids: "
        f"{'yes' if same else 'NO'}"
    )
    print(f"median of {repeats} steps each after {warmup} warm-up, engines alternating:")
    print(
        f"  ours {1 / ours_s:6.2f} steps/s ({ours_s:.3f} s/step), "
        f"{statistics.mean(ours_tokens):.1f} tokens per completion"
    )
    print(
        f"  trl  {1 / trl_s:6.2f} steps/s ({trl_s:.3f} s/step), "
        f"{statistics.mean(trl_tokens):.1f} tokens per completion"
    )
    print(f"  ratio ours/trl {trl_s / ours_s:.2f}x (goal >= 1.5)")
    phases = ", ".join(
        f"{name} {statistics.median([t[name] for t in ours_phases[warmup:]]):.3f}"
        for name in ours_phases[0]
    )
    print(f"  ours by phase (median s): {phases} (update: loss forward, backward, AdamW)")
    print("vision-tower calls per step:")
    print(f"  ours {ours_calls.per_step(steps)}")
    print(f"  trl  {trl_calls.per_step(steps)}")
    if trl_calls.grad == 0 and trl_calls.no_grad == steps:
        print(
            "  trl runs the vision tower only in generate: its reference and loss forwards get "
            "no pixel_values_videos, the policy is trained blind "
            "(docs/paper_facts.md#pitfalls-seen-in-other-implementations)."
        )


# --------------------------------------------------------------------------- paper scale


def measure_step(task: TrainTask, train: TrainConfig) -> str:
    """Peak CUDA memory and seconds (as text) of one optimizer step of `task` on its first prompt,
    taken as `training.loop.train` takes a step (autocast per `train.mixed_precision`,
    loss and backward, or the task's own `backward`, clipping, AdamW), without the loop's
    checkpoints and metrics."""
    device = torch.device("cuda")
    params = [p for p in task.model.parameters() if p.requires_grad]
    optimizer = adamw(params, train)
    batch = send_to_device(task.collate([task.train_dataset()[0]], [0]), device)
    task.model.train()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    try:
        with torch.autocast("cuda", torch.bfloat16, enabled=train.mixed_precision == "bf16"):
            backward = getattr(task, "backward", None)  # Stage 2: step by step, as the loop
            if backward is not None:
                backward(task.model, batch, 1.0)
            else:
                task.loss(task.model, batch)["loss"].backward()
        if train.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(params, train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
    except torch.cuda.OutOfMemoryError:
        return f"out of memory on {_paper_scale.cuda_total()}"
    seconds = time.perf_counter() - start
    return f"{_paper_scale.gib(torch.cuda.max_memory_allocated())} in {seconds:.0f} s"


def paper_steps(root: Path) -> tuple[str, str]:
    """One Stage-1 and one Stage-2 step at paper scale on a CUDA device (module docstring)."""
    settings = _paper_scale.paper_settings()
    manifest = _paper_scale.paper_manifest(root)
    samples = load_manifest(manifest)
    embedder = CLIPEmbedder.tiny().save_pretrained(root / "embedder")
    overrides = [
        f"checkpoint={root}",  # unread: the tasks are given the models
        f"train_manifest={manifest}",
        "eval_manifest=null",
        f"embedder={embedder}",
    ]
    reasoner, renderer = paper_models("cuda")
    renderer.set_shift(settings.flow_shift)
    reasoner.add_lora()  # what SFT-VLM leaves and Stage 1 trains
    config1 = load_config(
        JointGRPOVLMConfig, _paper_scale.STAGE_CONFIGS / "joint_grpo_stage1.yaml", overrides
    )
    task1 = JointGRPOVLMTask(
        config1,
        reasoner,
        renderer,
        load_embedder(embedder, device="cuda"),
        settings,
        root,
        samples,
        None,
    )
    stage1 = measure_step(task1, config1.train)
    del task1
    renderer.transformer.float()  # Stage 2 trains it: float32 weights, as the loop keeps them
    config2 = load_config(
        JointGRPOVDMConfig,
        _paper_scale.STAGE_CONFIGS / "joint_grpo_stage2.yaml",
        [*overrides, "anchor_min_rouge=0", "anchor_tries=1"],
    )
    task2 = JointGRPOVDMTask(config2, renderer, reasoner, settings, root, samples, None)
    return stage1, measure_step(task2, config2.train)


def paper_scale() -> None:
    """`--scale paper`: the planned memory everywhere, measured steps on a CUDA device."""
    counts = _paper_scale.meta_counts()
    plans = {"bf16": plan_memory(counts), "fp32": plan_memory(counts, frozen_bytes=FP32_BYTES)}
    measured = ("n/a (no CUDA device)",) * 2
    if torch.cuda.is_available():
        with tempfile.TemporaryDirectory() as tmp:
            measured = paper_steps(Path(tmp))
        print(f"on {torch.cuda.get_device_name()}:")
    print(
        f"== Joint-GRPO at paper scale: G={G}, one prompt per step, "
        "configs/paper/joint_grpo_stage{1,2}.yaml"
    )
    rows = [
        (f"Stage 1 (LoRA, {_paper_scale.parameters(counts.lora)} trained)", "stage1"),
        (f"Stage 2 (DiT, {_paper_scale.parameters(counts.dit)} trained)", "stage2"),
    ]
    print(f"  {'':<32} {'planned':>9} {'frozen fp32':>12}  measured peak")
    for (label, stage), peak in zip(rows, measured, strict=True):
        bf16, fp32 = (_paper_scale.gib(getattr(plans[k], stage)) for k in ("bf16", "fp32"))
        print(f"  {label:<32} {bf16:>9} {fp32:>12}  {peak}")
    notes = (
        f"{_paper_scale.ASSUMPTIONS}. Frozen fp32: the same with the frozen parts in float32, "
        "as the stage builders load them today (Reasoner.from_pretrained and "
        "Renderer.from_pretrained at their default dtype)."
    )
    print(textwrap.fill(notes, width=96, initial_indent="  ", subsequent_indent="  "))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each engine")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--frames", type=int, default=17, help="frames of the reward videos")
    parser.add_argument("--size", type=int, default=64, help="height = width of the videos")
    parser.add_argument("--part", choices=("1", "2", "all"), default="all")
    parser.add_argument(
        "--scale",
        choices=("toy", "paper"),
        default="toy",
        help="toy: parts 1 and 2 on the tiny models; paper: memory at the paper's scale",
    )
    args = parser.parse_args()
    quiet_model_libraries()
    if args.scale == "paper":
        paper_scale()
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f}, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = build_setup(root, args.frames, args.size)
        if args.part in ("1", "all"):
            stage1_breakdown(setup, args.repeats)
        if args.part in ("2", "all"):
            ours_vs_trl(setup, args.warmup, args.repeats, root)
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
