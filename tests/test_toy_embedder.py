"""The toy-world video-text embedder, its training and `vans train embedder`."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import typer
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from vans.cli.embedder import train_embedder as train_embedder_command
from vans.data.manifest import load_manifest
from vans.data.schema import TaskType, VideoRef, VNEPSample
from vans.data.toyworld import ToyWorldConfig, write_toyworld
from vans.data.video import VideoError
from vans.evaluation.embedders import VideoTextEmbedder
from vans.evaluation.toy_embedder import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    ToyEmbedder,
    ToyEmbedderConfig,
    ToyEmbedderError,
    build_vocab,
    words,
)
from vans.training.embedder import (
    EmbedderTrainConfig,
    EmbedderTrainError,
    caption_event,
    caption_retrieval,
    contrastive_loss,
    read_clips,
    split_by_scene,
    train_embedder,
    video_embeddings,
)

CAPTIONS = [
    "The red circle hits the blue square, and the blue square slides to the right.",
    "The green square is put in the green bin.",
    "A purple layer is poured into the container.",
]
SMALL = ToyEmbedderConfig(embed_dim=16, channels=(8, 8, 16, 16), text_width=16, text_heads=2)


def _embedder(config: ToyEmbedderConfig = SMALL, seed: int = 0) -> ToyEmbedder:
    torch.manual_seed(seed)
    return ToyEmbedder.untrained(build_vocab(CAPTIONS), config)


def _frames(n: int, h: int = 64, w: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, 3), dtype=torch.uint8, generator=g)


# --- the embedder ---------------------------------------------------------------------


def test_words_and_vocab() -> None:
    assert words("The Red-circle, hits 2 walls!") == ["the", "red", "circle", "hits", "2", "walls"]
    vocab = build_vocab(["b a a", "c b a"])
    assert vocab == ["<pad>", "<unk>", "<bos>", "a", "b", "c"]  # by count, ties alphabetical


def test_tokenize_unknown_words_truncation_and_padding() -> None:
    config = ToyEmbedderConfig(max_words=3)
    embedder = ToyEmbedder.untrained(build_vocab(["red circle hits"]), config)
    ids, mask = embedder.tokenize(["Red zebra circle hits wall", ""])
    vocab = embedder.vocab
    assert [vocab[i] for i in ids[0].tolist()] == ["<bos>", "red", "<unk>", "circle"]
    assert [vocab[i] for i in ids[1].tolist()] == ["<bos>", "<pad>", "<pad>", "<pad>"]
    assert mask.tolist() == [[True] * 4, [True, False, False, False]]


def test_embeddings_are_unit_rows_of_the_protocol_shape_for_any_frame_size() -> None:
    embedder = _embedder()
    assert isinstance(embedder, VideoTextEmbedder)
    assert embedder.name == "toyworld"
    for h, w in [(64, 64), (352, 640), (37, 90), (8, 8)]:
        out = embedder.embed_frames(_frames(3, h, w))
        assert out.shape == (3, 16) and out.dtype == torch.float32 and out.device.type == "cpu"
        torch.testing.assert_close(out.norm(dim=1), torch.ones(3))
    texts = embedder.embed_texts([*CAPTIONS, "", "words never seen in training"])
    assert texts.shape == (5, 16) and texts.dtype == torch.float32
    torch.testing.assert_close(texts.norm(dim=1), torch.ones(5))
    assert embedder.embed_frames(_frames(0)).shape == (0, 16)
    assert embedder.embed_texts([]).shape == (0, 16)


def test_embeddings_are_deterministic_and_batch_independent() -> None:
    embedder = _embedder()
    frames = _frames(5)
    batched = embedder.embed_frames(frames)
    single = torch.cat([embedder.embed_frames(frames[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)
    assert torch.equal(embedder.embed_frames(frames), batched)
    texts = [*CAPTIONS, "", "red"]  # different lengths: the batch pads the short ones
    batched = embedder.embed_texts(texts)
    single = torch.cat([embedder.embed_texts([t]) for t in texts])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)


def test_text_embedding_depends_on_word_order() -> None:
    embedder = _embedder()
    a, b = embedder.embed_texts(
        ["the red circle hits the blue square", "the blue square hits the red circle"]
    )
    assert not torch.allclose(a, b, atol=1e-4)


def test_bad_inputs_are_rejected() -> None:
    embedder = _embedder()
    with pytest.raises(ValueError, match="uint8"):
        embedder.embed_frames(torch.zeros(2, 64, 64, 3))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\)"):
        embedder.embed_frames(torch.zeros(64, 64, 3, dtype=torch.uint8))
    with pytest.raises(TypeError, match="sequence of strings"):
        embedder.embed_texts("one string")
    with pytest.raises(ToyEmbedderError, match="divisible"):
        ToyEmbedderConfig(image_size=60)


def test_save_load_round_trip_is_exact(tmp_path: Path) -> None:
    embedder = _embedder()
    embedder.metrics = {"val_video_to_text_top1": 0.5}
    out = embedder.save_pretrained(tmp_path / "emb")
    assert sorted(p.name for p in out.iterdir()) == [WEIGHTS_FILE, CONFIG_FILE]
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["kind"] == "toyworld" and meta["vocab"] == embedder.vocab
    assert meta["config"]["channels"] == [8, 8, 16, 16]
    loaded = ToyEmbedder.from_pretrained(out)
    assert loaded.config == SMALL and loaded.metrics == embedder.metrics
    frames = _frames(4, 48, 80)
    assert torch.equal(loaded.embed_frames(frames), embedder.embed_frames(frames))
    assert torch.equal(loaded.embed_texts(CAPTIONS), embedder.embed_texts(CAPTIONS))
    embedder.save_pretrained(out)  # overwriting an embedder directory is allowed


def test_load_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(ToyEmbedderError, match="no such embedder directory"):
        ToyEmbedder.from_pretrained(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ToyEmbedderError, match="is a file"):
        ToyEmbedder.from_pretrained(tmp_path / "file")
    with pytest.raises(ToyEmbedderError, match=f"not an embedder directory \\(no {CONFIG_FILE}\\)"):
        ToyEmbedder.from_pretrained(tmp_path)

    out = _embedder().save_pretrained(tmp_path / "emb")
    meta = json.loads((out / CONFIG_FILE).read_text())
    (out / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ToyEmbedderError, match="cannot read"):
        ToyEmbedder.from_pretrained(out)
    (out / CONFIG_FILE).write_text(json.dumps({**meta, "kind": "clip"}))
    with pytest.raises(ToyEmbedderError, match="kind is 'clip', expected 'toyworld'"):
        ToyEmbedder.from_pretrained(out)
    (out / CONFIG_FILE).write_text(json.dumps({**meta, "config": {**meta["config"], "x": 1}}))
    with pytest.raises(ToyEmbedderError, match=r"unknown config fields \['x'\]"):
        ToyEmbedder.from_pretrained(out)
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    state = load_file(out / WEIGHTS_FILE)
    save_file({k: v for k, v in state.items() if k != "logit_scale"}, out / WEIGHTS_FILE)
    with pytest.raises(
        ToyEmbedderError,
        match=r"weights do not fit .*Missing key\(s\) in state_dict: \"logit_scale\"",
    ):
        ToyEmbedder.from_pretrained(out)
    (out / WEIGHTS_FILE).unlink()
    with pytest.raises(ToyEmbedderError, match=f"missing {WEIGHTS_FILE}"):
        ToyEmbedder.from_pretrained(out)


def test_save_refuses_to_overwrite_an_unrelated_directory(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ToyEmbedderError, match="not an embedder directory; refusing"):
        _embedder().save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# --- the math -------------------------------------------------------------------------


def test_caption_retrieval_hand_made_case() -> None:
    videos = torch.tensor([[1.0, 0.2], [0.2, 1.0], [0.9, -0.3], [-1.0, -0.2]])
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
    captions = ["a", "b", "a", "c"]
    events = [0, 1, 2, 2]  # captions 2 and 3 word one event differently
    # Videos retrieve texts 0, 1, 0, 2: hit, hit, hit (same text "a"), miss ("a" != "c").
    assert (videos @ texts.T).argmax(1).tolist() == [0, 1, 0, 2]
    assert caption_retrieval(videos, texts, captions) == 3 / 4
    assert caption_retrieval(videos, texts, captions, events) == 4 / 4
    # Texts retrieve videos 0, 1, 3, 2: hit, hit, then two misses unless paraphrases count.
    sims = F.normalize(texts, dim=-1) @ F.normalize(videos, dim=-1).T
    assert sims.argmax(1).tolist() == [0, 1, 3, 2]
    assert caption_retrieval(texts, videos, captions) == 2 / 4
    assert caption_retrieval(texts, videos, captions, events) == 4 / 4
    with pytest.raises(ValueError, match="one video and one text embedding per caption"):
        caption_retrieval(videos, texts[:3], captions)
    with pytest.raises(ValueError, match="one event per caption"):
        caption_retrieval(videos, texts, captions, events=[0])


def test_contrastive_loss_matches_a_direct_computation() -> None:
    g = torch.Generator().manual_seed(0)
    videos = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    texts = F.normalize(torch.randn(4, 8, generator=g), dim=-1)
    scale = torch.tensor(10.0)
    logits = (scale * videos @ texts.T).tolist()

    def nll(rows: list[list[float]], positives: list[list[int]]) -> float:
        total = 0.0
        for row, pos in zip(rows, positives, strict=True):
            log_z = math.log(sum(math.exp(x) for x in row))
            total += -sum(row[j] - log_z for j in pos) / len(pos)
        return total / len(rows)

    columns = [list(c) for c in zip(*logits, strict=True)]
    distinct = torch.eye(4, dtype=torch.bool)
    expected = (nll(logits, [[i] for i in range(4)]) + nll(columns, [[i] for i in range(4)])) / 2
    assert contrastive_loss(videos, texts, scale, distinct).item() == pytest.approx(expected)
    # Pairs 1 and 2 share their caption: each counts the other as a positive too.
    same = distinct.clone()
    same[1, 2] = same[2, 1] = True
    positives = [[0], [1, 2], [1, 2], [3]]
    expected = (nll(logits, positives) + nll(columns, positives)) / 2
    assert contrastive_loss(videos, texts, scale, same).item() == pytest.approx(expected)


def _sample(id: str, answer: str, scene: str, **extra: object) -> VNEPSample:
    return VNEPSample(
        id=id,
        input=VideoRef(Path("in.mp4")),
        question="What happens next?",
        answer=answer,
        target=VideoRef(Path("out.mp4")),
        reasoning=None,
        task=TaskType.PREDICTIVE,
        source="toyworld",
        extra={"scene": scene, **extra},
    )


def test_split_by_scene_keeps_the_futures_of_a_scene_together() -> None:
    samples = [_sample(f"s{i}-f{k}", "x", f"s{i}") for i in range(20) for k in range(1 + i % 2)]
    train, val = split_by_scene(samples, 0.25, seed=0)
    assert sorted(train + val) == list(range(len(samples)))
    val_scenes = {samples[i].extra["scene"] for i in val}
    assert len(val_scenes) == 5  # a quarter of the 20 scenes
    assert not val_scenes & {samples[i].extra["scene"] for i in train}
    assert split_by_scene(samples, 0.25, seed=0) == (train, val)
    assert split_by_scene(samples, 0.25, seed=1) != (train, val)
    with pytest.raises(EmbedderTrainError, match="at least 2 scenes"):
        split_by_scene(samples[:1], 0.5, seed=0)


def test_caption_event_ignores_the_wording_but_not_the_meaning() -> None:
    collision = {
        "family": "collision",
        "future": 0,
        "movers": ["red circle", "blue circle"],
        "objects": [{"name": "red circle"}, {"name": "blue circle"}],
    }

    def event(answer: str, **changes: object) -> str:
        return caption_event(_sample("a", answer, "s", **{**collision, **changes}))

    hits = event("The red circle hits the blue circle, and it slides to the right.")
    assert event("The red circle collides with the blue circle, pushing it to the right.") == hits
    assert event("The red circle hits the blue circle, and it slides to the left.") != hits
    assert event("The red circle bounces off the blue circle.", future=1) != event(
        "The red circle bounces off the blue circle."
    )
    swapped = event("The blue circle hits the red circle.", movers=["blue circle", "red circle"])
    assert swapped != event("The blue circle hits the red circle.")
    other = event("The red circle hits the green circle.", objects=[{"name": "green circle"}])
    assert other != event("The red circle hits the green circle.")
    real = VNEPSample(
        id="r",
        input=VideoRef(Path("in.mp4")),
        question="q",
        answer="Add the onions.",
        target=VideoRef(Path("out.mp4")),
        reasoning=None,
        task=TaskType.PROCEDURAL,
        source="youcook2",
    )
    assert caption_event(real) == "Add the onions."


def test_train_config_errors_name_the_field() -> None:
    with pytest.raises(EmbedderTrainError, match=r"val_fraction must be in \(0, 1\), got 1\.0"):
        EmbedderTrainConfig(val_fraction=1.0)
    with pytest.raises(
        EmbedderTrainError, match="frames_per_sample \\(5\\) must be <= clip_frames"
    ):
        EmbedderTrainConfig(clip_frames=4, frames_per_sample=5)
    with pytest.raises(EmbedderTrainError, match="batch_size must be >= 2"):
        EmbedderTrainConfig(batch_size=1)


# --- training end to end --------------------------------------------------------------


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("toy")
    write_toyworld(ToyWorldConfig(num=40, seed=3, input_frames=17, target_frames=9), out)
    return out


def _fast_config(data: Path, out: Path, **overrides: object) -> EmbedderTrainConfig:
    fields = dict(
        data_dir=str(data),
        out_dir=str(out),
        val_fraction=0.25,
        steps=30,
        batch_size=16,
        lr=1e-3,
        warmup_steps=10,
        clip_frames=5,
        frames_per_sample=2,
        embed_dim=32,
    )
    return EmbedderTrainConfig(**{**fields, **overrides})


def test_training_lowers_the_loss_and_saves_a_loadable_embedder(
    toy_data: Path, tmp_path: Path
) -> None:
    config = _fast_config(toy_data, tmp_path / "emb")
    result = train_embedder(config)
    assert len(result.losses) == 30
    assert sum(result.losses[-5:]) < 0.7 * sum(result.losses[:5])
    assert result.num_train + result.num_val == 40 and result.num_val > 0
    for figure in (result.video_to_text, result.text_to_video, result.video_to_text_exact):
        assert 0.0 <= figure <= 1.0
    assert result.video_to_text >= result.video_to_text_exact  # paraphrases only add hits

    loaded = ToyEmbedder.from_pretrained(tmp_path / "emb")
    assert loaded.metrics["val_video_to_text_top1"] == result.video_to_text
    assert loaded.metrics["num_val"] == result.num_val
    # The saved figure is reproducible from the saved model and the same split.
    samples = load_manifest(toy_data / "manifest.jsonl")
    _, val = split_by_scene(samples, config.val_fraction, config.seed)
    held_out = [samples[i] for i in val]
    clips = read_clips(held_out, config.clip_frames, config.image_size)
    captions = [s.answer for s in held_out]
    figure = caption_retrieval(
        video_embeddings(loaded, clips),
        loaded.embed_texts(captions),
        captions,
        [caption_event(s) for s in held_out],
    )
    assert figure == result.video_to_text


def test_training_is_reproducible(toy_data: Path, tmp_path: Path) -> None:
    a = train_embedder(_fast_config(toy_data, tmp_path / "a", steps=3))
    b = train_embedder(_fast_config(toy_data, tmp_path / "b", steps=3))
    assert a.losses == b.losses
    frames = _frames(2)
    torch.testing.assert_close(
        ToyEmbedder.from_pretrained(tmp_path / "a").embed_frames(frames),
        ToyEmbedder.from_pretrained(tmp_path / "b").embed_frames(frames),
        rtol=0,
        atol=0,
    )


def test_training_data_errors(toy_data: Path, tmp_path: Path) -> None:
    with pytest.raises(EmbedderTrainError, match=r"no manifest\.jsonl"):
        train_embedder(_fast_config(tmp_path, tmp_path / "emb"))
    with pytest.raises(EmbedderTrainError, match=r"batch_size \(64\) exceeds the"):
        train_embedder(_fast_config(toy_data, tmp_path / "emb", batch_size=64))
    with pytest.raises(VideoError, match=r"_target\.mp4: the video has only 9 frames but 12"):
        train_embedder(_fast_config(toy_data, tmp_path / "emb", clip_frames=12))


def test_cli_trains_and_reports_the_retrieval_figure(toy_data: Path, tmp_path: Path) -> None:
    app = typer.Typer()
    app.command()(train_embedder_command)
    app.command("other")(lambda: None)  # two commands: typer keeps the sub-command name
    out = tmp_path / "emb"
    args = ["train-embedder", "--data", str(toy_data), "--out", str(out), "--steps", "2"]
    args += ["--batch-size", "8", "--clip-frames", "3", "--frames-per-sample", "1"]
    args += ["--embed-dim", "16", "--val-fraction", "0.25"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "held-out caption retrieval" in result.output and "video->text" in result.output
    assert ToyEmbedder.from_pretrained(out).config.embed_dim == 16


@pytest.mark.slow
def test_default_training_retrieves_held_out_captions(tmp_path: Path) -> None:
    write_toyworld(ToyWorldConfig(num=2000, seed=0), tmp_path / "data")
    config = EmbedderTrainConfig(data_dir=str(tmp_path / "data"), out_dir=str(tmp_path / "emb"))
    result = train_embedder(config)
    assert result.video_to_text >= 0.90, result.metrics()
    assert result.untrained_video_to_text < 0.2
