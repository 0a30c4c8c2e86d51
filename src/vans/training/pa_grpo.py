"""VideoP2R's process-aware GRPO (PA-GRPO) for video QA (docs/videop2r.md#pa-grpo).

Per question of a batch, from the question's seed:

1. sample: the reasoner writes G answers `<observation>..</observation><think>..</think>
   <answer>..</answer>`, one batched `generate` with the video encoded once;
2. score: the rule rewards (`videoqa.rewards.rule_rewards`: accuracy, format, a length
   reward per process) and the perception judge's reward of each observation
   (`videoqa.judge.PerceptionJudge`: is the observation alone enough for the answer?). The
   perception process is judged by perception + its length reward, the reasoning process by
   accuracy + format + its length reward;
3. advantages: each process's rewards normalised within the group on their own
   (`rl.advantages.process_advantages`), the perception advantage on the observation block's
   tokens, the reasoning advantage on the think and answer blocks' tokens;
4. update: PPO-clip + beta * k3 KL on the per-token log-probs of the sampled tokens with the
   video in the forward (`rl.policy.groups_loss`, as Joint-GRPO Stage 1).

Switches for the paper's ablations and baseline (`PAGRPOConfig`): `perception_reward` /
`reasoning_reward` off drop that process's reward (its tokens then take the other's
advantage); `separate_tokens` off gives every token the sum of both advantages; `advantage:
sequence` is GRPO, one advantage of the summed rewards on every token (with
`perception_reward` off: Video-R1's accuracy + format + length).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from vans.errors import ConfigError
from vans.models.prompting import ASSISTANT_PROMPT
from vans.models.vlm import LORA_DIR, Completion, Reasoner, SamplingConfig
from vans.rl.advantages import process_advantages, segment_token_advantages, token_segment_masks
from vans.rl.config import GRPOConfig
from vans.rl.grpo import LossType
from vans.rl.policy import groups_loss, record_logprobs
from vans.rl.reference import ReferenceWeights, disable_dropout
from vans.rl.rollout import QAGroup, QAPrompt, RolloutBuffer
from vans.training.config import TrainConfig
from vans.training.stage_io import LazyItems
from vans.videoqa.frames import question_frames
from vans.videoqa.judge import JudgeConfig, PerceptionJudge, build_judge
from vans.videoqa.prompting import (
    PERCEPTION,
    REASONING,
    SEGMENTS,
    parse_trace,
    question_text,
    trace_spans,
)
from vans.videoqa.rewards import RewardConfig, rule_rewards
from vans.videoqa.rows import QARow, load_rows

REWARDS = ("accuracy", "format", "length/perception", "length/reasoning", "perception")
PROCESSES = {
    "perception": ("perception", "length/perception"),
    "reasoning": ("accuracy", "format", "length/reasoning"),
}
"""Which rewards judge each process (the sum is the process's reward)."""


@dataclass
class PAGRPOConfig:
    """PA-GRPO (`vans train pa-grpo`); the defaults are the paper's where it states them."""

    reasoner: str
    """The reasoner to train: a Qwen2.5-VL directory (after SFT on traces; with a LoRA
    adapter in its lora/ when `train_mode` is "lora")."""
    train_rows: list[str]
    """Video-R1 / VideoP2R row files (a part of a multi-part file stands for all)."""
    eval_rows: list[str] | None = None
    """Held-out rows whose rewards are logged as eval_* every `train.eval_every` steps."""
    video_root: str | None = None
    """The folder the rows' paths are relative to (default: each file's folder)."""
    train_mode: Literal["full", "lora"] = "full"
    """Every parameter (the paper's 7B, as Video-R1), or the reasoner's LoRA adapter."""
    fps: float = 2.0
    """Frames a second of video the reasoner sees, clamped to [min_frames, max_frames]
    (Video-R1's 2 fps; unstated in the paper)."""
    min_frames: int = 4
    max_frames: int = 16
    """Paper: 16 frames in training."""
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    """Group size (paper: 8 rollouts), KL, clip; `reward_weights` is not used here."""
    rewards: RewardConfig = field(default_factory=RewardConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The perception judge (kind toy / http / local) and its cache."""
    advantage: Literal["process", "sequence"] = "process"
    """"process": PA-GRPO; "sequence": GRPO, one advantage of all rewards on every token."""
    separate_tokens: bool = True
    """Each process's advantage on its own blocks' tokens (off: the token-assignment
    ablation, both on every token)."""
    perception_reward: bool = True
    """The judge's reward and the perception length reward (off: ablation / GRPO)."""
    reasoning_reward: bool = True
    """Accuracy, format and the reasoning length reward (off: ablation)."""
    loss_type: LossType = "grpo"
    temperature: float = 1.0
    max_new_tokens: int = 1024
    """Longest answer: room for both length bands (perception 320 + reasoning 512 tokens)."""
    system_prompt: str = ASSISTANT_PROMPT
    cache_items: bool = False
    """Keep decoded videos in memory (the toy benchmark's are tiny)."""
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        problems = []
        if self.advantage not in ("process", "sequence"):
            problems.append(f"advantage must be process or sequence, got {self.advantage!r}")
        if self.train_mode not in ("full", "lora"):
            problems.append(f"train_mode must be full or lora, got {self.train_mode!r}")
        if not (self.perception_reward or self.reasoning_reward):
            problems.append("perception_reward and reasoning_reward cannot both be off")
        if not 1 <= self.min_frames <= self.max_frames:
            problems.append("frames need 1 <= min_frames <= max_frames")
        if not self.fps > 0 or not self.temperature > 0 or self.max_new_tokens < 1:
            problems.append("fps and temperature must be > 0 and max_new_tokens >= 1")
        if self.grpo.reward_weights:
            problems.append(
                "grpo.reward_weights is Joint-GRPO's; PA-GRPO switches rewards with "
                "perception_reward / reasoning_reward"
            )
        if problems:
            raise ConfigError("invalid pa-grpo config: " + "; ".join(problems))


class PAGRPOTask:
    """The `TrainTask` of PA-GRPO; see the module docstring."""

    def __init__(
        self,
        config: PAGRPOConfig,
        reasoner: Reasoner,
        judge: PerceptionJudge,
        train_rows: Sequence[QARow],
        eval_rows: Sequence[QARow] | None,
    ) -> None:
        self.config = config
        self.reasoner = reasoner
        self.judge = judge
        self.model: torch.nn.Module = reasoner.model
        self.num_iterations = config.grpo.num_iterations
        self.sampling = SamplingConfig(
            temperature=config.temperature, max_new_tokens=config.max_new_tokens
        )
        disable_dropout(self.model)
        self.reference = ReferenceWeights(self.model) if config.grpo.beta > 0 else None
        self._buffer: RolloutBuffer[list[QAGroup]] = RolloutBuffer(self.num_iterations)
        self._train = self._items(train_rows)
        self._eval = None if eval_rows is None else self._items(eval_rows)

    def _items(self, rows: Sequence[QARow]) -> LazyItems:
        c = self.config

        def build(index: int) -> QAPrompt:
            row = rows[index]
            video = question_frames(
                row.path, row.data_type, fps=c.fps, min_frames=c.min_frames, max_frames=c.max_frames
            )
            return QAPrompt(row, question_text(row), video.frames, video.fps)

        return LazyItems(len(rows), build, cache=c.cache_items)

    def train_dataset(self) -> Sequence[QAPrompt]:
        return self._train

    def eval_dataset(self) -> Sequence[QAPrompt] | None:
        return self._eval

    def collate(self, items: Sequence[QAPrompt], seeds: Sequence[int]) -> dict[str, Any]:
        if len(items) != len(seeds):
            raise ValueError(f"{len(items)} items for {len(seeds)} seeds")
        return {"prompts": list(items), "seeds": torch.tensor([int(s) for s in seeds])}

    # ------------------------------------------------------------------ rollout

    def rollout(self, prompt: QAPrompt, seed: int, *, update: bool = True) -> QAGroup:
        """Sample G answers to one question and `score` them; with `update`, also the
        log-probs the loss needs."""
        completions = self.reasoner.generate_completions(
            prompt.frames,
            [prompt.question],
            num_samples=self.config.grpo.group_size,
            sampling=self.sampling,
            seed=seed,
            fps=prompt.fps,
        )[0]
        group = self.score(prompt, completions)
        if update:
            record_logprobs(group, self._logprobs, self.num_iterations, self.reference)
        return group

    def score(self, prompt: QAPrompt, completions: Sequence[Completion]) -> QAGroup:
        """A group's rewards by process and its per-token advantages (module docstring)."""
        c = self.config
        parsed = [parse_trace(x.text) for x in completions]
        length = max(len(x.token_ids) for x in completions)
        masks = [
            token_segment_masks(
                self.reasoner.tokenizer, x.token_ids.tolist(), length, trace_spans, SEGMENTS
            )
            for x in completions
        ]
        blocks = [{name: int(m[name].sum()) for name in SEGMENTS} for m in masks]
        rules = [
            rule_rewards(x.text, prompt.row, b, c.rewards)
            for x, b in zip(completions, blocks, strict=True)
        ]
        rewards = {name: torch.tensor([r[name] for r in rules]) for name in REWARDS[:4]}
        if c.perception_reward:
            judged = self.judge.rewards([prompt.row] * len(parsed), [p.observation for p in parsed])
        else:
            judged = [float("nan")] * len(parsed)
        rewards["perception"] = torch.tensor(judged)
        for process, names in PROCESSES.items():
            rewards[f"process/{process}"] = sum(rewards[n] for n in names)
        advantages = process_advantages(
            rewards["process/perception"] if c.perception_reward else None,
            rewards["process/reasoning"] if c.reasoning_reward else None,
            mode=c.advantage,
            separate_tokens=c.separate_tokens,
            scale=c.grpo.scale_rewards,
            eps=c.grpo.eps,
        )
        completion_mask = torch.stack(
            [torch.arange(length) < len(x.token_ids) for x in completions]
        )
        token_advantages = segment_token_advantages(
            {p: advantages[p] for p in PROCESSES},
            {"perception": _union(masks, PERCEPTION), "reasoning": _union(masks, REASONING)},
            completion_mask,
            fallback=advantages["all"],
        )
        return QAGroup(
            prompt, list(completions), parsed, rewards, advantages, token_advantages, blocks
        )

    def _groups(self, batch: dict[str, Any], update: bool) -> list[QAGroup]:
        pairs = zip(batch["prompts"], batch["seeds"].tolist(), strict=True)
        return [self.rollout(prompt, int(seed), update=update) for prompt, seed in pairs]

    def _logprobs(self, group: QAGroup) -> tuple[torch.Tensor, torch.Tensor]:
        return self.reasoner.completion_logprobs(
            group.prompt.frames,
            group.prompt.question,
            [x.token_ids for x in group.completions],
            temperature=self.config.temperature,
            fps=group.prompt.fps,
        )

    # ------------------------------------------------------------------ loss

    def loss(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The GRPO loss of the batch's groups on their per-process token advantages, with
        every reward, the judge's counts and the blocks' lengths to log."""
        if model is not self.reasoner.model:
            raise ValueError("PA-GRPO computes log-probabilities through the task's reasoner")
        c = self.config
        groups = self._buffer.get(batch["seeds"], lambda: self._groups(batch, True))
        out = self._statistics(groups)
        out.update(groups_loss(groups, self._logprobs, c.grpo, c.loss_type, c.max_new_tokens))
        return out

    @torch.no_grad()
    def evaluate(self, model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Held-out rewards of G sampled answers per question; "loss" is minus the mean
        accuracy, so a falling eval loss is a rising accuracy."""
        out = self._statistics(self._groups(batch, False))
        out["loss"] = -out["reward/accuracy"]
        return out

    def _statistics(self, groups: Sequence[QAGroup]) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        for name in [*REWARDS, *(f"process/{p}" for p in PROCESSES)]:
            values = torch.stack([g.rewards[name] for g in groups])
            out[f"reward/{name}"] = torch.nanmean(values)
        for process in PROCESSES:
            adv = torch.stack([g.advantages[process] for g in groups])
            out[f"advantage/{process}_abs_mean"] = adv.abs().mean()
        for name in SEGMENTS:
            tokens = [float(b[name]) for g in groups for b in g.block_tokens]
            out[f"length/{name}_tokens"] = torch.tensor(tokens).mean()
        formed = [float(p.well_formed) for g in groups for p in g.parsed]
        out["format/well_formed"] = torch.tensor(formed).mean()
        out.update({k: torch.tensor(v) for k, v in self.judge.take_stats().as_dict().items()})
        return out

    def save_pretrained(self, model: torch.nn.Module, out: Path) -> None:
        """The trained reasoner as a directory (with its adapter in lora/ for LoRA runs)."""
        if model is not self.reasoner.model:
            raise ValueError("save_pretrained expects the task's (unwrapped) model")
        self.reasoner.save_pretrained(out)


def _union(masks: Sequence[dict[str, torch.Tensor]], blocks: Sequence[str]) -> torch.Tensor:
    """(G, L): the tokens of each completion inside any of `blocks`."""
    return torch.stack([torch.stack([m[b] for b in blocks]).any(0) for m in masks])


def build_pa_grpo_task(config: PAGRPOConfig) -> PAGRPOTask:
    """Load the reasoner (every parameter trainable, or its LoRA adapter), the judge and the
    rows (checked, every video present)."""
    path = Path(config.reasoner)
    lora = path / LORA_DIR
    if config.train_mode == "lora" and not lora.exists():
        raise ConfigError(f"{path}: train_mode lora needs a LoRA adapter in {LORA_DIR}/")
    if config.train_mode == "full" and lora.exists():
        raise ConfigError(
            f"{path}: has a LoRA adapter ({LORA_DIR}/); set train_mode: lora to train it"
        )
    reasoner = Reasoner.from_pretrained(
        path, lora=lora if config.train_mode == "lora" else None, trainable_lora=True
    )
    if config.train_mode == "full":
        reasoner.model.requires_grad_(True)
    reasoner.system_prompt = config.system_prompt
    root = config.video_root
    train_rows = load_rows(config.train_rows, root, check_files=True)
    eval_rows = load_rows(config.eval_rows, root, check_files=True) if config.eval_rows else None
    return PAGRPOTask(config, reasoner, build_judge(config.judge), train_rows, eval_rows)
