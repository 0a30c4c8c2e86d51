"""`vans convert-official`: tiny models exported in the authors' key formats convert back
to our checkpoint with outputs identical to the originals, and bad files get one clear line.

The exports below are written from what the authors' formats are
(docs/paper_facts.md#the-authors-inference-code), not from the converter: original Wan2.1
names for the DiT, a peft LoRA under `pipe.mllm.mllm_backbone.` in the old transformers
layout for the reasoner.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from vans.cli.main import run

# diffusers name -> original Wan2.1 name, applied in order (the inverse of diffusers' rules,
# written out from Wan's `WanModel` so that the converter is checked against it).
DIFFUSERS_TO_WAN = (
    ("condition_embedder.time_embedder.linear_1.", "time_embedding.0."),
    ("condition_embedder.time_embedder.linear_2.", "time_embedding.2."),
    ("condition_embedder.text_embedder.linear_1.", "text_embedding.0."),
    ("condition_embedder.text_embedder.linear_2.", "text_embedding.2."),
    ("condition_embedder.time_proj.", "time_projection.1."),
    (".attn1.", ".self_attn."),
    (".attn2.", ".cross_attn."),
    (".to_q.", ".q."),
    (".to_k.", ".k."),
    (".to_v.", ".v."),
    (".to_out.0.", ".o."),
    (".ffn.net.0.proj.", ".ffn.0."),
    (".ffn.net.2.", ".ffn.2."),
    (".norm2.", ".norm3."),  # Wan's cross-attention norm is norm3, diffusers' norm2
    (".scale_shift_table", ".modulation"),
)
AUTHORS_LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PREFIX = "pipe.mllm.mllm_backbone."


def wan_name(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return "head.head." + key.removeprefix("proj_out.")
    for ours, theirs in DIFFUSERS_TO_WAN:
        key = key.replace(ours, theirs)
    return key


def old_layout(module: str) -> str:
    """transformers < 4.52 names of Qwen2.5-VL: top-level `model.layers`, `visual`."""
    if module.startswith("model.visual."):
        return module.removeprefix("model.")
    return module.replace("model.language_model.", "model.", 1)


def convert(*args: str) -> int:
    return run(["convert-official", *args])


def forward(transformer: torch.nn.Module) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 2, 4, 4, generator=g)
    text = torch.randn(1, 5, 32, generator=g)
    with torch.no_grad():
        return transformer(
            hidden_states=x,
            timestep=torch.tensor([500.0]),
            encoder_hidden_states=text,
            return_dict=False,
        )[0]


@pytest.fixture(scope="module")
def authors(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """'Fine-tuned' tiny models and their exports in the authors' formats."""
    from diffusers import WanTransformer3DModel
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

    from vans.models.vlm import Reasoner

    root = tmp_path_factory.mktemp("authors")
    g = torch.Generator().manual_seed(1)
    base = WanTransformer3DModel.from_pretrained(tiny_checkpoint / "vdm" / "transformer")
    base_state = base.state_dict()
    trained = {k: v + 0.1 * torch.randn(v.shape, generator=g) for k, v in base_state.items()}
    full = {wan_name(k): v for k, v in trained.items()}
    assert len(full) == len(trained)  # the inverse names are one-to-one
    for name in ("blocks.0.self_attn.q.weight", "blocks.1.cross_attn.o.bias", "head.head.weight",
                 "head.modulation", "blocks.0.modulation", "blocks.0.norm3.weight",
                 "blocks.0.ffn.0.weight", "patch_embedding.weight", "text_embedding.2.weight",
                 "time_embedding.0.weight", "time_projection.1.weight"):  # fmt: skip
        assert name in full, name
    # DiffSynth exports the trained tensors only: here, the attention.
    partial_keys = [k for k in trained if ".attn1." in k or ".attn2." in k]
    partial_state = {**base_state, **{k: trained[k] for k in partial_keys}}
    save_file(full, root / "vdm_full.safetensors")
    save_file({wan_name(k): trained[k] for k in partial_keys}, root / "vdm_partial.safetensors")

    reasoner = Reasoner.from_pretrained(tiny_checkpoint / "vlm")
    config = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=AUTHORS_LORA_TARGETS)
    with warnings.catch_warnings():  # peft 0.21 calls a method transformers 5 deprecated
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(reasoner.model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:  # lora_B starts at zero: make the adapter change the outputs
                param.copy_(0.2 * torch.randn(param.shape, generator=g))
    reasoner.model.eval()
    lora = {}
    for key, value in get_peft_model_state_dict(peft_model).items():
        module, part = key.removeprefix("base_model.model.").rsplit(".lora_", 1)
        lora[f"{PREFIX}{old_layout(module)}.lora_{part.replace('.weight', '.default.weight')}"] = (
            value
        )
    assert f"{PREFIX}visual.blocks.0.mlp.gate_proj.lora_A.default.weight" in lora
    assert f"{PREFIX}model.layers.1.self_attn.q_proj.lora_B.default.weight" in lora
    assert not [k for k in lora if ".attn.qkv." in k or "language_model" in k]
    save_file(lora, root / "vlm.safetensors")

    frames = torch.randint(0, 256, (4, 56, 56, 3), generator=g, dtype=torch.uint8)
    inputs = reasoner.prepare([frames], ["What happens next?"])
    with torch.no_grad():
        logits = reasoner.model(**inputs).logits
    full_model = WanTransformer3DModel.from_pretrained(tiny_checkpoint / "vdm" / "transformer")
    full_model.load_state_dict(trained)
    partial_model = WanTransformer3DModel.from_pretrained(tiny_checkpoint / "vdm" / "transformer")
    partial_model.load_state_dict(partial_state)
    return {
        "root": root,
        "qwen": str(tiny_checkpoint / "vlm"),
        "wan": str(tiny_checkpoint / "vdm"),
        "full": forward(full_model),
        "partial": forward(partial_model),
        "base": forward(base),
        "partial_keys": partial_keys,
        "base_keys": list(base_state),
        "lora": lora,
        "inputs": inputs,
        "logits": logits,
    }


def bases(authors: dict) -> list[str]:
    return ["--qwen", authors["qwen"], "--wan", authors["wan"]]


def test_both_files_convert_to_identical_outputs(authors: dict, tmp_path: Path, capsys) -> None:
    from vans.models.checkpoint import load_checkpoint

    root, out = authors["root"], tmp_path / "ckpt"
    code = convert(*bases(authors), "--vdm", str(root / "vdm_full.safetensors"),
                   "--vlm", str(root / "vlm.safetensors"), "--out", str(out))  # fmt: skip
    printed = capsys.readouterr()
    assert code == 0, printed.err
    assert "kept from the base (not in the file): 0" in printed.out
    reasoner, renderer, settings = load_checkpoint(out)
    # Their weights answer as their code does: the "official" profile is the checkpoint's.
    assert settings.sampler == "euler" and settings.vlm_frames == 6
    assert torch.equal(forward(renderer.transformer), authors["full"])
    assert not torch.equal(authors["full"], authors["base"])  # the file did change the DiT
    with torch.no_grad():
        logits = reasoner.model(**authors["inputs"]).logits
    assert (logits - authors["logits"]).abs().max().item() == 0.0

    config = json.loads((out / "vlm" / "lora" / "adapter_config.json").read_text())
    targets = set(config["target_modules"])
    assert "model.visual.blocks.1.mlp.down_proj" in targets  # the vision MLP is adapted
    assert "model.language_model.layers.0.self_attn.o_proj" in targets
    assert not [t for t in targets if t.endswith((".qkv", ".proj"))]
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (8, 32, 0.05)
    report = json.loads((out / "conversion.json").read_text())
    assert report["vdm"]["kept_from_base"] == [] and report["vdm"]["unused"] == []
    assert report["vdm"]["mapped"]["blocks.0.self_attn.q.weight"] == "blocks.0.attn1.to_q.weight"
    assert report["vdm"]["mapped"]["head.head.weight"] == "proj_out.weight"
    assert len(report["vlm"]["mapped"]) == len(authors["lora"])
    assert report["vlm"]["not_adapted"] == []


def test_partial_dit_overlays_the_base(authors: dict, tmp_path: Path, capsys) -> None:
    from vans.models.checkpoint import load_checkpoint

    out = tmp_path / "ckpt"
    code = convert(*bases(authors), "--vdm", str(authors["root"] / "vdm_partial.safetensors"),
                   "--out", str(out))  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0
    reasoner, renderer, _ = load_checkpoint(out)
    assert (forward(renderer.transformer) - authors["partial"]).abs().max().item() == 0.0
    assert reasoner.peft_model is None and not (out / "vlm" / "lora").exists()
    kept = [k for k in authors["base_keys"] if k not in authors["partial_keys"]]
    report = json.loads((out / "conversion.json").read_text())
    assert sorted(report["vdm"]["kept_from_base"]) == sorted(kept)
    # every kept key is printed, layers folded
    assert f"kept from the base (not in the file): {len(kept)}" in printed
    assert "blocks.{0-1}.ffn.net.0.proj.weight" in printed and "proj_out.bias" in printed


def test_key_mapping_rules() -> None:
    from vans.models.official import fold_layers, lora_key, wan_to_diffusers

    t = torch.zeros(1)
    assert list(wan_to_diffusers("blocks.3.norm3.weight", t)) == ["blocks.3.norm2.weight"]
    assert list(wan_to_diffusers("pipe.dit.head.modulation", t)) == ["scale_shift_table"]
    assert list(wan_to_diffusers("model.diffusion_model.blocks.0.self_attn.o.bias", t)) == [
        "blocks.0.attn1.to_out.0.bias"
    ]
    q = "model.language_model.layers.2.self_attn.q_proj"
    for key in (
        f"{PREFIX}model.layers.2.self_attn.q_proj.lora_A.default.weight",  # the authors'
        f"base_model.model.{q}.lora_A.weight",  # peft's own, current layout
        "base_model.model.model.layers.2.self_attn.q_proj.lora_A.weight",  # peft's, old layout
    ):
        assert lora_key(key)[:2] == (q, "A"), key
    assert lora_key(f"{PREFIX}visual.blocks.0.mlp.up_proj.lora_B.weight")[:2] == (
        "model.visual.blocks.0.mlp.up_proj",
        "B",
    )
    assert lora_key(f"{PREFIX}model.layers.0.self_attn.q_proj.weight") is None
    keys = [f"blocks.{i}.attn1.to_q.weight" for i in (0, 1, 2, 5)] + ["proj_out.weight"]
    assert fold_layers(keys) == ["blocks.{0-2,5}.attn1.to_q.weight", "proj_out.weight"]


def _dit_file(authors: dict, path: Path, **changes: torch.Tensor) -> Path:
    from safetensors.torch import load_file

    state = load_file(authors["root"] / "vdm_full.safetensors")
    save_file({**state, **changes}, path)
    return path


def _lora_file(authors: dict, path: Path, **changes: torch.Tensor) -> Path:
    save_file({**authors["lora"], **changes}, path)
    return path


def _errors(authors: dict, tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    qk = "blocks.0.self_attn.q.weight"
    extra = "blocks.0.self_attn.extra.weight"
    lora_a = f"{PREFIX}model.layers.0.mlp.up_proj.lora_A.default.weight"
    full = f"{PREFIX}model.layers.0.self_attn.q_proj.weight"
    pickle = tmp_path / "pickle.safetensors"
    torch.save({qk: torch.zeros(2)}, pickle)
    unused_dit = _dit_file(authors, tmp_path / "u.safetensors", **{extra: torch.zeros(3)})
    bad_dit = _dit_file(authors, tmp_path / "s.safetensors", **{qk: torch.zeros(24, 23)})
    unused_lora = _lora_file(authors, tmp_path / "l.safetensors", **{full: torch.zeros(64, 64)})
    bad_lora = _lora_file(authors, tmp_path / "r.safetensors", **{lora_a: torch.zeros(8, 63)})
    return {
        "unused DiT key": (
            ["--vdm", str(unused_dit)],
            [extra, "map to no weight of the base transformer (1)", "--allow-unused"],
        ),
        "DiT shape": (
            ["--vdm", str(bad_dit)],
            [qk, "blocks.0.attn1.to_q.weight", "[24, 23]", "[24, 24]"],
        ),
        "pickle": (["--vdm", str(pickle)], [str(pickle), "not a safetensors file"]),
        "missing file": (["--vdm", str(tmp_path / "nope.safetensors")], ["no such file"]),
        "unused LoRA key": (
            ["--vlm", str(unused_lora)],
            [full, "no LoRA matrix", "--allow-unused"],
        ),
        "LoRA shape": (
            ["--vlm", str(bad_lora)],
            [lora_a, "[8, 63]", "[8, 64]"],
        ),
        "nothing": ([], ["nothing to convert"]),
        "not a Wan dir": (
            ["--vdm", str(authors["root"] / "vdm_full.safetensors"), "--wan", authors["qwen"]],
            ["--wan", "missing transformer/"],
        ),
    }  # fmt: skip


ERROR_CASES = ("unused DiT key", "DiT shape", "pickle", "missing file", "unused LoRA key",
               "LoRA shape", "nothing", "not a Wan dir")  # fmt: skip


@pytest.mark.parametrize("case", ERROR_CASES)
def test_bad_input_is_one_clear_line(case: str, authors: dict, tmp_path: Path, capsys) -> None:
    args, expected = _errors(authors, tmp_path)[case]
    out = tmp_path / "ckpt"
    code = convert(*bases(authors), *args, "--out", str(out))
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2, err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, (text, err)
    assert not out.exists()  # nothing is written before everything checks


def test_allow_unused_drops_and_reports(authors: dict, tmp_path: Path, capsys) -> None:
    from vans.models.checkpoint import load_checkpoint

    extra = "blocks.0.self_attn.extra.weight"
    vdm = _dit_file(authors, tmp_path / "u.safetensors", **{extra: torch.zeros(3)})
    out = tmp_path / "ckpt"
    code = convert(*bases(authors), "--vdm", str(vdm), "--allow-unused", "--out", str(out))
    assert code == 0, capsys.readouterr().err
    assert extra in capsys.readouterr().out
    assert json.loads((out / "conversion.json").read_text())["vdm"]["unused"] == [extra]
    _, renderer, _ = load_checkpoint(out)
    assert torch.equal(forward(renderer.transformer), authors["full"])
