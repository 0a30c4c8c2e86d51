"""The models behind the pipeline's two roles, one interface (`vans.chat.ChatBackend`):
the captioner (clips in, a caption and a usability verdict out) and the writer (captions in;
question, reasoning and answer out; the leak check and its rewrite).

A backend is named by a spec string:

- `http://host:port/v1#model`: an OpenAI-compatible server (`vans.chat.ChatEndpoint`; a
  vision-language model such as Qwen2.5-VL under vLLM for the captioner, any chat model for
  the writer); the key from `--api-key-env`.
- `local:DIR`: a model in DIR: a Qwen2.5-VL checkpoint (`LocalVideoLM`, captioner only: it
  watches the clip at its frame rate) or any other transformers causal LM
  (`vans.chat.LocalCausalLM`, writer only: it reads text, so it cannot watch a clip).
- `offline`: `OfflineBackend`, no model: the toy world's ground truth (`--truth`), or for
  clips without one a caption measured from the pixels; the writer fills fixed sentences
  from the captions and annotations. For tests and demos; never for training data.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vans.chat import BackendError, ChatBackend, ChatEndpoint, LocalCausalLM
from vans.vansdata.prompts import Request

Role = Literal["captioner", "writer"]


def build_backend(
    spec: str,
    role: Role,
    *,
    truth: Path | None = None,
    concurrency: int = 16,
    timeout_s: float = 120.0,
    retries: int = 3,
    api_key_env: str | None = "OPENAI_API_KEY",
) -> ChatBackend:
    """The backend `spec` names, for `role` (module docstring)."""
    if spec == "offline":
        return OfflineBackend(truth)
    if spec.startswith("local:"):
        directory = Path(spec.removeprefix("local:"))
        if not directory.is_dir():
            what = "is not a directory" if directory.exists() else "does not exist"
            raise BackendError(f"--{role} {spec}: the model directory {directory} {what}")
        if _model_type(directory) == "qwen2_5_vl":
            if role == "writer":
                raise BackendError(
                    f"--writer {spec}: a Qwen2.5-VL checkpoint captions clips; the writer needs "
                    "a text model (any causal LM directory)"
                )
            return LocalVideoLM(directory)
        if role == "captioner":
            raise BackendError(
                f"--captioner {spec}: not a Qwen2.5-VL checkpoint; a text model cannot watch "
                "clips (serve a vision-language model over HTTP and pass its URL#model)"
            )
        return LocalCausalLM(directory, max_new_tokens=256)
    url, sep, model = spec.partition("#")
    if not sep or not model:
        raise BackendError(
            f"--{role} {spec!r}: must be 'offline', 'local:DIR' or 'http(s)://host/v1#model'"
        )
    return ChatEndpoint(
        url,
        model,
        api_key_env=api_key_env,
        timeout_s=timeout_s,
        concurrency=concurrency,
        retries=retries,
        max_tokens=512,
    )


def _model_type(directory: Path) -> str | None:
    try:
        return json.loads((directory / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None  # LocalCausalLM names what is wrong with the directory


class LocalVideoLM:
    """A Qwen2.5-VL checkpoint from a local directory (`vans.models.vlm.Reasoner`): each
    request's clip read at the model's frame rate, the prompt's system part as its system
    prompt, greedy decoding. The captioner only: the reasoner always reads a video."""

    def __init__(self, directory: Path, max_new_tokens: int = 256) -> None:
        from vans.models.vlm import Reasoner, SamplingConfig

        self.reasoner = Reasoner.from_pretrained(directory)
        self.sampling = SamplingConfig(do_sample=False, max_new_tokens=max_new_tokens)
        self.name = f"local:{directory.resolve()}"

    def complete(self, requests: Sequence[Request]) -> list[str | None]:
        from vans.chat import text_of
        from vans.data.video import read_video

        out: list[str | None] = []
        for request in requests:
            system, user = (m["content"] for m in text_of(request.messages))
            self.reasoner.system_prompt = system
            if request.clip is None:
                raise BackendError(f"{self.name}: a video model captions clips; got a text request")
            frames = read_video(request.clip, fps=self.reasoner.fps).frames
            out.append(self.reasoner.generate(frames, [user], sampling=self.sampling)[0][0])
        return out


def load_truth(path: Path) -> dict[str, list[str]]:
    """A ground-truth file (`vans.data.toyworld.long`): video id -> the caption of each
    annotated step, in time order (a step's index, `vans.vansdata.annotations`)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BackendError(f"--truth {path}: not a ground-truth JSON file ({exc})") from None
    if not isinstance(data, dict) or not all(
        isinstance(v, list) and all(isinstance(s, str) for s in v) for v in data.values()
    ):
        raise BackendError(f"--truth {path}: must map each video id to a list of step captions")
    return data


class OfflineBackend:
    """Replies without a model (module docstring): every reply is a JSON object, as the
    prompts ask a model for."""

    def __init__(self, truth: Path | None = None) -> None:
        self.truth = load_truth(truth) if truth is not None else {}
        # The truth's content (not its path) is in the name, so every cached reply matches it.
        digest = hashlib.sha256(json.dumps(self.truth, sort_keys=True).encode()).hexdigest()
        self.name = f"offline:{digest[:12]}" if truth is not None else "offline"

    def complete(self, requests: Sequence[Request]) -> list[str | None]:
        return [json.dumps(self._reply(r), ensure_ascii=False) for r in requests]

    def _reply(self, request: Request) -> dict[str, Any]:
        f = request.fields
        if request.kind == "caption":
            steps = self.truth.get(f["video"])
            if steps is not None and 0 <= f["step"] < len(steps):
                return {"caption": steps[f["step"]], "usable": True, "reason": "ground truth"}
            if request.clip is None:
                raise BackendError(
                    "the offline captioner measures clips; got a request without one"
                )
            return measured_caption(request.clip, float(f["duration"]))
        if request.kind in ("write_procedural", "write_predictive"):
            return _written(request.kind, f)
        if request.kind == "leak":
            leaked = target_only_terms(f["input_caption"], f["target_caption"])
            found = sorted(leaked & _terms(f"{f['question']} {f['reasoning']}"))
            return {"leak": bool(found), "details": ", ".join(found)}
        # rewrite: keep the sentences that name nothing only the next clip shows
        leaked = target_only_terms(f["input_caption"], f["target_caption"])
        kept = [s for s in _sentences(f["reasoning"]) if not _terms(s) & leaked]
        question = f["question"] if not _terms(f["question"]) & leaked else "What happens next?"
        reasoning = " ".join(kept) or f"The clip shows: {f['input_caption']}"
        return {"question": question, "reasoning": reasoning, "answer": f["answer"]}


def _written(kind: str, f: dict[str, Any]) -> dict[str, str]:
    if kind == "write_procedural":
        task = f["task"] or "this task"
        done = "; ".join(f["completed"])
        return {
            "question": f"My task: {task}. What should I do next?",
            "reasoning": (
                f"The task is {task}. The steps done so far: {done}. "
                f"The clip shows: {f['input_caption']}"
            ),
            "answer": f["target_caption"],
        }
    return {
        "question": "What happens next?",
        "reasoning": f"The clip shows: {f['input_caption']}",
        "answer": f["target_caption"],
    }


# Words that say nothing of a clip's content: never counted as leaked.
_STOP = frozenset(
    re.findall(
        r"\w+",
        "the a an and or of to in on at by for with from is are was were be been it its this "
        "that these those there then than as into onto over under up down out off left right "
        "next clip video shows show scene while after before again one two three some",
    )
)


def _terms(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) > 2 and w not in _STOP}


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def target_only_terms(input_caption: str, target_caption: str) -> set[str]:
    """Content words of the target's caption that the input's caption never uses: what only
    the target clip shows, as far as the captions tell."""
    return _terms(target_caption) - _terms(input_caption)


_COLOURS = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "grey": (128, 128, 128),
    "red": (200, 40, 40),
    "green": (40, 160, 60),
    "blue": (40, 70, 200),
    "yellow": (220, 200, 40),
    "orange": (230, 130, 30),
    "brown": (120, 80, 40),
    "purple": (130, 60, 160),
}


def measured_caption(clip: Path, seconds: float) -> dict[str, Any]:
    """What the pixels of `clip` (`seconds` long) show, at 2 frames per second: dominant colour,
    brightness and how much changes between frames; unusable when nearly nothing changes
    (a still or a title card) or it is nearly black."""
    from vans.data.video import read_video  # PyAV and torch: only when a clip is measured

    video = read_video(clip, fps=2.0)
    frames = video.frames.numpy().astype(np.float32)
    mean = frames.reshape(-1, 3).mean(0)
    colour = min(_COLOURS, key=lambda c: float(np.sum((mean - _COLOURS[c]) ** 2)))
    brightness = float(mean.mean())
    change = float(np.abs(np.diff(frames, axis=0)).mean()) if len(frames) > 1 else 0.0
    motion = "little" if change < 4 else "some" if change < 12 else "a lot of"
    light = "dark" if brightness < 70 else "bright" if brightness > 170 else "evenly lit"
    caption = f"A {seconds:.1f}-second {light} clip, mostly {colour} in tone, with {motion} motion."
    usable, reason = True, "the picture changes"
    if brightness < 10:
        usable, reason = False, "nearly black"
    elif change < 0.5:
        usable, reason = False, "nearly nothing moves (a still)"
    return {"caption": caption, "usable": usable, "reason": reason}
