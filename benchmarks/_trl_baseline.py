"""trl's GRPOTrainer on the VANS reasoner, with video prompts, for `bench_joint_grpo.py`.

trl feeds a vision-language model through its processor: `processor.apply_chat_template`
turns each conversational prompt into token ids plus `pixel_values_videos`,
`video_grid_thw`, `second_per_grid_ts` and `mm_token_type_ids`, which trl hands to
`generate`. transformers' Qwen2.5-VL video processor needs torchvision (no working CPU
build here, docs/paper_facts.md#environment), so the processor built here keeps
`Qwen2_5_VLProcessor` (placeholder expansion, mRoPE timing) and swaps in a video processor
that runs the project's plain-torch `preprocess_video` with the reasoner's own patch and
pixel settings. The chat template renders exactly `vans.models.prompting.build_prompt`'s
text, so trl's prompt token ids equal `Reasoner.prompt_ids` (the benchmark checks this).

A `datasets.Dataset` cannot hold tensors, so a video is named by a key (the sample id)
and the video processor looks the decoded frames up, as the real one would open a path.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import trl
from datasets import Dataset
from transformers import BatchFeature, Qwen2_5_VLProcessor, TrainerCallback
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.trainer_callback import PrinterCallback
from transformers.video_processing_utils import VideoProcessorMixin
from transformers.video_utils import VideoMetadata

from vans.models.prompting import VIDEO_PAD, VISION_END, VISION_START
from vans.models.video_processing import preprocess_video
from vans.models.vlm import Reasoner, SamplingConfig
from vans.rewards.vans import caption_rewards, format_rewards
from vans.rl.config import GRPOConfig
from vans.training.config import TrainConfig

CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% for part in message['content'] %}"
    f"{{% if part['type'] == 'video' %}}{VISION_START}{VIDEO_PAD}{VISION_END}"
    "{% elif part['type'] == 'text' %}{{ part['text'] }}{% endif %}"
    "{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen2.5-VL-Instruct's ChatML for a system text and a user video + question, without the
parts the VANS prompt never uses (images, tools, "Video 1:" labels)."""


class TorchVideoProcessor(VideoProcessorMixin):
    """Qwen2.5-VL video preprocessing by `preprocess_video` (plain torch, no torchvision).

    Videos are keys of `frames`: uint8 (T, H, W, 3) already sampled at the reasoner's fps.
    """

    def __init__(self, reasoner: Reasoner, frames: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.frames = frames
        self.fps = reasoner.fps
        self.patch_size = reasoner.patch_size
        self.temporal_patch_size = reasoner.temporal_patch_size
        self.merge_size = reasoner.merge_size
        self.min_pixels = reasoner.min_pixels
        self.max_pixels = reasoner.max_pixels

    def __call__(self, videos: Sequence[Any], **kwargs: Any) -> BatchFeature:
        # The processor passes one list of videos per conversation.
        keys = [v for group in videos for v in (group if isinstance(group, list) else [group])]
        patches, grids = zip(
            *(
                preprocess_video(
                    self.frames[key],
                    patch_size=self.patch_size,
                    temporal_patch_size=self.temporal_patch_size,
                    merge_size=self.merge_size,
                    min_pixels=self.min_pixels,
                    max_pixels=self.max_pixels,
                )
                for key in keys
            ),
            strict=True,
        )
        out = BatchFeature(
            {"pixel_values_videos": torch.cat(patches), "video_grid_thw": torch.cat(grids)}
        )
        # Qwen2_5_VLProcessor derives second_per_grid_ts from the sampled frame rate.
        out["video_metadata"] = [
            VideoMetadata(total_num_frames=len(self.frames[key]), fps=self.fps) for key in keys
        ]
        return out


class TorchVideoQwenProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` that accepts a `TorchVideoProcessor`. transformers checks each
    sub-processor's class by looking it up on the top-level module, where, without
    torchvision, the video processor classes are placeholders that nothing is an instance
    of."""

    def check_argument_for_proper_class(self, argument_name: str, argument: Any) -> type:
        if argument_name == "video_processor":
            if not isinstance(argument, VideoProcessorMixin):
                raise TypeError(f"expected a VideoProcessorMixin, got {type(argument).__name__}")
            return VideoProcessorMixin
        return super().check_argument_for_proper_class(argument_name, argument)


def build_processor(reasoner: Reasoner, frames: Mapping[str, torch.Tensor]) -> Qwen2_5_VLProcessor:
    """The processor trl gets: the reasoner's tokenizer, our video processing, the VANS chat
    format. The (PIL) image processor only fills the slot: the prompts hold no images."""
    return TorchVideoQwenProcessor(
        image_processor=Qwen2VLImageProcessorPil(),
        tokenizer=reasoner.tokenizer,
        video_processor=TorchVideoProcessor(reasoner, frames),
        chat_template=CHAT_TEMPLATE,
    )


def prompt_dataset(prompts: Sequence[Mapping[str, Any]], system_prompt: str) -> Dataset:
    """trl's conversational rows: system prompt, then the video (by id) and the question;
    `answer` reaches the reward functions as a keyword argument. Every content is a list of
    parts (Arrow needs one type per column)."""
    rows = [
        {
            "prompt": [
                {"role": "system", "content": [{"type": "text", "text": system_prompt}]},
                {
                    "role": "user",
                    "content": [
                        {"type": "video", "video": p.id},
                        {"type": "text", "text": p.question},
                    ],
                },
            ],
            "answer": p.answer,
        }
        for p in prompts
    ]
    return Dataset.from_list(rows)


def _texts(completions: Sequence[Any]) -> list[str]:
    # Conversational prompts give completions as [{"role": "assistant", "content": text}].
    return [c[0]["content"] if isinstance(c, list) else c for c in completions]


def r_f(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """The format reward, in trl's reward-function signature."""
    return format_rewards(_texts(completions))


def r_t1(completions: Sequence[Any], answer: Sequence[str], **kwargs: Any) -> list[float]:
    """ROUGE-L of the caption against the row's ground truth, in trl's signature."""
    return caption_rewards(_texts(completions), list(answer))


def build_trainer(
    model: torch.nn.Module,
    processor: Qwen2_5_VLProcessor,
    dataset: Dataset,
    *,
    grpo: GRPOConfig,
    sampling: SamplingConfig,
    train: TrainConfig,
    steps: int,
    out_dir: Path,
    callbacks: Sequence[TrainerCallback] = (),
    reward_hook: Callable[[Sequence[Sequence[int]]], None] | None = None,
) -> trl.GRPOTrainer:
    """A GRPOTrainer with our GRPO, sampling and optimiser settings: one prompt of G
    completions per step, on the CPU in float32, no vLLM, no gradient checkpointing, nothing
    logged or saved. `reward_hook` sees every step's completion token ids."""

    def r_f_seen(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]], **kw: Any):
        if reward_hook is not None:
            reward_hook(completion_ids)
        return r_f(completions, **kw)

    r_f_seen.__name__ = "r_f"
    args = trl.GRPOConfig(
        output_dir=str(out_dir),
        num_generations=grpo.group_size,
        per_device_train_batch_size=grpo.group_size,
        max_completion_length=sampling.max_new_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k or 0,
        beta=grpo.beta,
        epsilon=grpo.clip_range,
        epsilon_high=grpo.eps_high,
        scale_rewards=grpo.scale_rewards,
        # Each reward z-scored within its group, then summed, as ours
        # (docs/paper_facts.md#joint-grpo).
        multi_objective_aggregation="normalize_then_sum",
        loss_type="grpo",
        learning_rate=train.lr,
        lr_scheduler_type="constant",
        weight_decay=train.weight_decay,
        adam_beta1=train.adam_betas[0],
        adam_beta2=train.adam_betas[1],
        adam_epsilon=train.adam_eps,
        max_grad_norm=train.max_grad_norm,
        optim="adamw_torch",
        max_steps=steps,
        use_cpu=True,
        bf16=False,  # trl's default turns bf16 autocast on; ours runs float32
        gradient_checkpointing=False,  # trl's default is on; ours does not checkpoint
        use_vllm=False,
        shuffle_dataset=False,
        report_to="none",
        logging_strategy="no",
        save_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        seed=train.seed,
    )
    trainer = trl.GRPOTrainer(
        model=model,
        reward_funcs=[r_f_seen, r_t1],
        args=args,
        train_dataset=dataset,
        processing_class=processor,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)  # prints the end-of-training summary otherwise
    return trainer
