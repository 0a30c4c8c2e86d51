"""Bad input through the real CLI, one row per class of mistake: each exits non-zero with one
line naming the culprit, no traceback, and leaves everything outside --out as it was."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from vans.cli.main import run
from vans.data.toyworld import ToyWorldConfig, write_toyworld


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, tiny_checkpoint: Path) -> dict[str, str]:
    root = tmp_path_factory.mktemp("bad")
    manifest = write_toyworld(ToyWorldConfig(num=1, size=(32, 32)), root / "toy")
    (root / "a_file").write_text("x")
    (root / "lr.yaml").write_text("train:\n  lr: -1\n")
    (root / "warmup.yaml").write_text("train:\n  steps: 10\n  warmup_steps: 50\n")
    (root / "latin1.yaml").write_bytes("train:\n  out_dir: caf\xe9\n".encode("latin-1"))
    (root / "users").mkdir()
    (root / "users" / "notes.txt").write_text("mine")
    video = next((root / "toy" / "videos").glob("*_input.mp4"))
    damaged = {
        "truncated_vlm": "vlm/model.safetensors",
        "truncated_vae": "vdm/vae/diffusion_pytorch_model.safetensors",
    }
    for name, part in damaged.items():
        shutil.copytree(tiny_checkpoint, root / name)
        weights = root / name / part
        weights.write_bytes(weights.read_bytes()[:500])
    for name, line in (("bad_steps", "steps: -3"), ("negative_refs", "num_reference_frames: -1")):
        shutil.copytree(tiny_checkpoint, root / name)
        settings = root / name / "vans.yaml"
        key = line.split(":")[0]
        kept = [x for x in settings.read_text().splitlines() if not x.startswith(f"{key}:")]
        settings.write_text("\n".join([*kept, line]) + "\n")
    return {
        "ckpt": str(tiny_checkpoint),
        "manifest": str(manifest),
        "video": str(video),
        "file": str(root / "a_file"),
        "users": str(root / "users"),
        "root": str(root),
    }


CASES = {
    "device unknown": (
        ["predict", "--checkpoint", "{ckpt}", "--video", "{video}", "--question", "q",
         "--out", "{root}/o1", "--device", "gpu"],
        "device 'gpu': not a device name",
    ),
    "device unsupported": (
        ["eval", "--checkpoint", "{ckpt}", "--manifest", "{manifest}", "--out", "{root}/o2",
         "--device", "meta"],
        "vans runs on cpu, cuda, mps, not meta",
    ),
    "device absent": (
        ["predict", "--checkpoint", "{ckpt}", "--video", "{video}", "--question", "q",
         "--out", "{root}/o3", "--device", "cuda:7"],
        "device 'cuda:7'",
    ),
    "limit not positive": (
        ["eval", "--checkpoint", "{ckpt}", "--manifest", "{manifest}", "--out", "{root}/o4",
         "--limit", "-1"],
        "--limit must be >= 1, got -1",
    ),
    "out is a file (init-tiny)": (["init-tiny", "--out", "{file}"], "a_file: is a file"),
    "out is a file (toyworld)": (
        ["data", "toyworld", "--out", "{file}", "--num", "1"], "a_file: is a file"
    ),
    "out holds a user's files (predict)": (
        ["predict", "--checkpoint", "{ckpt}", "--video", "{video}", "--question", "q",
         "--out", "{users}"],
        "users: holds files that no vans predict wrote",
    ),
    "out holds a user's files (demo)": (
        ["demo", "--checkpoint", "{ckpt}", "--out", "{users}"],
        "users: holds files that no vans demo wrote",
    ),
    "out holds a user's files (recipe)": (
        ["reproduce", "toyworld", "--out", "{users}"],
        "users: holds files that no vans reproduce toyworld wrote",
    ),
    "out holds a data set (preview)": (
        ["data", "preview", "{manifest}", "--out", "{root}/toy"],
        "holds files that no vans data preview wrote",
    ),
}  # fmt: skip


CASES |= {
    "fps nan": (["data", "toyworld", "--out", "{root}/t1", "--fps", "nan"], "fps must be"),
    "learning rate negative": (
        ["train", "sft-vlm", "--config", "{root}/lr.yaml"], "lr.yaml (train): invalid train config"
    ),
    "warm-up longer than the run": (
        ["train", "sft-vlm", "--config", "{root}/warmup.yaml"], "warmup_steps (50) is longer"
    ),
    "adam betas": (["train", "sft-vlm", "train.adam_betas=[0.9,1.5]"], "adam_betas must be"),
    "config not UTF-8": (["train", "sft-vlm", "--config", "{root}/latin1.yaml"], "not UTF-8"),
    "truncated reasoner weights": (
        ["predict", "--checkpoint", "{root}/truncated_vlm", "--video", "{video}",
         "--question", "q", "--out", "{root}/o6"],
        "truncated_vlm/vlm: cannot load the reasoner: Error while deserializing header",
    ),
    "truncated VAE weights": (
        ["predict", "--checkpoint", "{root}/truncated_vae", "--video", "{video}",
         "--question", "q", "--out", "{root}/o7"],
        "truncated_vae/vdm/vae: cannot load",
    ),
    "vans.yaml reference frames": (
        ["predict", "--checkpoint", "{root}/negative_refs", "--video", "{video}",
         "--question", "q", "--out", "{root}/o9"],
        "num_reference_frames must be a whole number >= 0, got -1",
    ),
    "vans.yaml value": (
        ["predict", "--checkpoint", "{root}/bad_steps", "--video", "{video}",
         "--question", "q", "--out", "{root}/o8"],
        "vans.yaml: steps must be a whole number >= 1, got -3",
    ),
    "training out_dir is a file": (
        ["train", "sft-vlm", "checkpoint={ckpt}", "train_manifest={manifest}", "eval_manifest=null",
         "train.out_dir={file}", "train.steps=1", "train.warmup_steps=0"],
        "a_file: cannot be made a folder",
    ),
    "odd frame size": (
        ["data", "toyworld", "--out", "{root}/t4", "--size", "33x65"], "size must be even"
    ),
    "probability above 1": (
        ["data", "toyworld", "--out", "{root}/t3", "--multi-future", "1.5"],
        "multi_future is a probability",
    ),
    "seed negative": (["data", "toyworld", "--out", "{root}/t2", "--seed", "-1"], "--seed"),
    "seed huge": (
        ["predict", "--checkpoint", "{ckpt}", "--video", "{video}", "--question", "q",
         "--out", "{root}/o5", "--seed", "99999999999999999999"],
        "--seed",
    ),
    "threads zero": (["reproduce", "toyworld", "--out", "{root}/r", "--threads", "0"], "--threads"),
    "max samples zero": (
        ["data", "preview", "{manifest}", "--out", "{root}/p", "--max-samples", "0"],
        "--max-samples",
    ),
}  # fmt: skip


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_clear_line(case: str, world: dict[str, str], capsys) -> None:
    template, message = CASES[case]
    args = [a.format(**world) for a in template]
    before = _tree(Path(world["root"]))
    code = run(args)
    err = capsys.readouterr().err
    assert code != 0, f"{case}: exit 0"
    assert "Traceback" not in err and message in " ".join(err.split()), err
    after = _tree(Path(world["root"]))
    assert {k: v for k, v in after.items() if k in before} == before  # nothing overwritten
