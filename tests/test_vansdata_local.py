"""VANS-Data's local transformers backends, real models from directories: a tiny random
Qwen2.5-VL checkpoint as the captioner (it watches each clip) and a tiny random Qwen2 causal
LM as the writer. Their replies are noise, so every item they answer is a listed rejection
with its reason, never a silent drop; the same request gives the same reply."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from vans.chat import BackendError, LocalCausalLM
from vans.data.toyworld.long import write_long_videos
from vans.models.tiny import train_reasoner_tokenizer
from vans.vansdata.backends import LocalVideoLM, OfflineBackend, build_backend
from vans.vansdata.build import BuildSettings, build
from vans.vansdata.prompts import Prompts


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory):
    return write_long_videos(tmp_path_factory.mktemp("long"), num_videos=1, steps=3)


def tiny_causal_lm(path) -> None:
    tokenizer = train_reasoner_tokenizer(["What happens next?", '{"question": "answer"}'])
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_local_models_by_directory(toy, tmp_path, tiny_checkpoint) -> None:
    vlm = tiny_checkpoint / "vlm"
    tiny_causal_lm(tmp_path / "lm")
    assert isinstance(build_backend(f"local:{vlm}", "captioner"), LocalVideoLM)
    assert isinstance(build_backend(f"local:{tmp_path / 'lm'}", "writer"), LocalCausalLM)
    with pytest.raises(BackendError, match=r"not a Qwen2\.5-VL checkpoint"):
        build_backend(f"local:{tmp_path / 'lm'}", "captioner")
    with pytest.raises(BackendError, match="the writer needs a text model"):
        build_backend(f"local:{vlm}", "writer")
    with pytest.raises(BackendError, match="must be 'offline', 'local:DIR'"):
        build_backend("127.0.0.1:8000", "writer")

    settings = BuildSettings(toy.annotations, "coin", toy.videos)
    captioner = LocalVideoLM(vlm, max_new_tokens=8)
    report = build(settings, tmp_path / "a", captioner, OfflineBackend())
    assert [r["item"] for r in report["rejections"]] == [
        f"clip coin-toytower0-000-00{k}" for k in range(3)
    ]
    assert all(
        r["reason"].startswith("the captioner's reply is unusable") for r in report["rejections"]
    )
    (clip,) = (tmp_path / "a" / "clips").glob("coin-toytower0-000-000-*.mp4")
    request = Prompts().request("caption", {"duration": "1.5", "context": ""}, clip=clip)
    assert captioner.complete([request]) == captioner.complete([request])

    writer = LocalCausalLM(tmp_path / "lm", max_new_tokens=8)
    report = build(settings, tmp_path / "b", OfflineBackend(toy.truth), writer)
    assert report["counts"]["pairs"] == 2 and report["counts"]["samples"] == 0
    assert {r["step"] for r in report["rejections"]} == {"write"}
    assert json.loads((tmp_path / "b" / "report.json").read_text()) == report
