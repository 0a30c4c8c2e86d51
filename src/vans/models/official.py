"""The VANS authors' released weights (KlingAIResearch/VANS) in our checkpoint layout.

Their two files (docs/paper_facts.md#the-authors-inference-code;
docs/official.md#converting-the-authors-weights):

- `vdm.safetensors`: the fine-tuned Wan2.1-T2V-1.3B DiT in the original Wan / DiffSynth key
  names (`blocks.0.self_attn.q.weight`, `head.head.weight`, ...). DiffSynth exports only the
  trained tensors, so the file may be partial: it is laid over the base transformer's state
  dict, and every base key it leaves alone and every file key that lands on no parameter is
  reported (never a silent `strict=False`).
- `vlm.safetensors`: a peft LoRA (r 8, alpha 32, dropout 0.05, targets q/k/v/o/gate/up/down
  matched as suffixes, so the vision tower's MLP is adapted too) of the Qwen2.5-VL inside
  their pipeline (keys under `pipe.mllm.mllm_backbone.`), in the transformers < 4.52 layout
  (`model.layers...`, `visual...`).

The rename rules are the libraries' own, imported, not copied: diffusers'
`convert_wan_transformer_to_diffusers` for the DiT, transformers' checkpoint conversion
mapping of Qwen2.5-VL for the layout. `load_official` reads and checks everything in memory;
`save_converted` writes the checkpoint (`vans.models.checkpoint`'s layout).
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from vans.errors import one_line
from vans.io import atomic_dir, write_json
from vans.models.checkpoint import VANSSettings, write_settings
from vans.models.errors import LOAD_ERRORS, CheckpointError
from vans.models.profiles import apply_profile
from vans.models.vdm import EXPECTED_LAYOUT, SUBFOLDERS, check_weights
from vans.models.vlm import LORA_DIR, check_model_dir

VDM_PREFIXES = ("pipe.dit.",)
"""Stripped from DiT keys before diffusers' rules (which strip `model.diffusion_model.`
themselves): DiffSynth names the DiT `pipe.dit` while training and normally removes it on
export; a file saved without that step still converts."""

VLM_PREFIXES = ("pipe.mllm.mllm_backbone.", "base_model.model.")
"""Stripped in this order from LoRA keys: the Qwen2.5-VL's place in the authors' pipeline,
then peft's wrapper (a file saved by `PeftModel.save_pretrained` has only the latter)."""

LORA_TARGET_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
"""The authors' LoRA target names, matched as suffixes (peft's rule for a list): every
language-model layer's attention and MLP and the vision tower's MLP (its attention is `qkv`
/ `proj`, which they do not match). Only used to report what the file leaves unadapted."""

LORA_ALPHA = 32
LORA_DROPOUT = 0.05
"""The authors' LoRA alpha and dropout: a LoRA file holds only the matrices (r is their
shape), so these come from their code (docs/paper_facts.md#the-authors-inference-code)
unless given."""

ADAPTER_WEIGHTS = "adapter_model.safetensors"
REPORT_FILE = "conversion.json"
"""Written into the converted checkpoint: every key mapped, kept from the base, or unused."""

_LORA_KEY = re.compile(r"(?P<module>.+)\.lora_(?P<part>[AB])(?:\.(?P<adapter>[^.]+))?\.weight")
"""`<module>.lora_A.weight` (peft's saved form) or `<module>.lora_A.<adapter>.weight` (a
module's own state dict, which DiffSynth-style training saves)."""


# ---------------------------------------------------------------------------- reading


def read_safetensors(path: str | Path, option: str) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file, or a CheckpointError naming the file and `option`
    (the command-line option it came from) and what to pass instead."""
    path = Path(path)
    if not path.is_file():
        what = "is a directory" if path.is_dir() else "no such file"
        raise CheckpointError(f"{option} {path}: {what}; pass the authors' {path.name or option}")
    try:
        tensors = load_file(path)
    except (SafetensorError, OSError, ValueError) as exc:
        # A pickle (.bin / .pt) renamed to .safetensors lands here too: it is never unpickled.
        raise CheckpointError(
            f"{option} {path}: not a safetensors file ({one_line(exc)}); pass the authors' "
            "released .safetensors file (pickled .bin / .pt weights are refused: they can run "
            "code)"
        ) from exc
    if not tensors:
        raise CheckpointError(f"{option} {path}: holds no tensors")
    return tensors


def fold_layers(keys: Iterable[str]) -> list[str]:
    """Keys with their first layer number folded: 30 keys `blocks.N.attn1.to_q.weight` read
    `blocks.{0-29}.attn1.to_q.weight`. What the reports print: every key, on a screen."""
    groups: dict[tuple[str, str], list[int]] = {}
    for key in keys:
        match = re.search(r"\.(\d+)\.", key)
        if match is None:
            groups.setdefault((key, ""), [])
            continue
        head, tail = key[: match.start(1)], key[match.end(1) :]
        groups.setdefault((head, tail), []).append(int(match.group(1)))
    lines = []
    for (head, tail), numbers in sorted(groups.items()):
        if not numbers:
            lines.append(head)
        elif len(numbers) == 1:
            lines.append(f"{head}{numbers[0]}{tail}")
        else:
            lines.append(f"{head}{{{_ranges(sorted(set(numbers)))}}}{tail}")
    return lines


def _ranges(numbers: list[int]) -> str:
    spans: list[list[int]] = []
    for n in numbers:
        if spans and n == spans[-1][1] + 1:
            spans[-1][1] = n
        else:
            spans.append([n, n])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in spans)


def _listing(keys: list[str], limit: int = 6) -> str:
    """Up to `limit` folded keys for a one-line error message."""
    folded = fold_layers(keys)
    more = f" and {len(folded) - limit} more" if len(folded) > limit else ""
    return ", ".join(folded[:limit]) + more


# ---------------------------------------------------------------------------- the DiT


@dataclass
class TransformerOverlay:
    """The base transformer's state dict with the authors' tensors laid over it."""

    state: dict[str, torch.Tensor]
    """Every base key: the file's tensor where it has one, else the base's."""
    mapped: dict[str, str]
    """File key -> our (diffusers) key."""
    kept: list[str]
    """Base keys the file does not provide (kept from the base transformer)."""
    unused: list[str] = field(default_factory=list)
    """File keys that map to no base key (dropped; only with `allow_unused`)."""


def wan_to_diffusers(key: str, tensor: torch.Tensor) -> dict[str, torch.Tensor]:
    """diffusers' `WanTransformer3DModel` name(s) of one original Wan2.1 / DiffSynth DiT
    tensor, by diffusers' own rules (one key each for the T2V model; the rules split a few
    Wan-Animate tensors in two, hence a dict)."""
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    for prefix in VDM_PREFIXES:
        key = key.removeprefix(prefix)
    # One key at a time, so each converted key is known to come from its file key.
    return convert_wan_transformer_to_diffusers({key: tensor})


def overlay_transformer(
    base: Mapping[str, torch.Tensor],
    authors: Mapping[str, torch.Tensor],
    source: str,
    *,
    allow_unused: bool = False,
) -> TransformerOverlay:
    """Lay the authors' DiT tensors (`authors`, original Wan names, possibly a part) over
    the base transformer's state dict `base` (diffusers names). A file key that maps to no
    base key is a CheckpointError naming it unless `allow_unused`; a shape that differs
    from the base's always is."""
    state = dict(base)
    mapped: dict[str, str] = {}
    unused: list[str] = []
    for key, tensor in authors.items():
        for ours, value in wan_to_diffusers(key, tensor).items():
            if ours not in base:
                unused.append(key)
                continue
            if ours in mapped.values():
                other = next(k for k, v in mapped.items() if v == ours)
                raise CheckpointError(f"{source}: {other} and {key} both map to {ours}")
            if tuple(value.shape) != tuple(base[ours].shape):
                raise CheckpointError(
                    f"{source}: {key} (our {ours}) has shape {list(value.shape)}, the base "
                    f"transformer's {list(base[ours].shape)}: the file is for another model "
                    "size; pass Wan2.1-T2V-1.3B-Diffusers as --wan"
                )
            state[ours] = value
            mapped[key] = ours
    if not mapped:
        raise CheckpointError(
            f"{source}: none of its {len(authors)} tensors is a Wan2.1 DiT weight (e.g. "
            f"{_listing(sorted(authors), 3)}); pass the authors' vdm.safetensors as --vdm"
        )
    if unused and not allow_unused:
        raise CheckpointError(
            f"{source}: tensors that map to no weight of the base transformer "
            f"({len(unused)}): {_listing(sorted(unused))}; check --wan is "
            "Wan2.1-T2V-1.3B-Diffusers, or pass --allow-unused to drop them"
        )
    provided = set(mapped.values())
    kept = [key for key in base if key not in provided]
    return TransformerOverlay(state=state, mapped=mapped, kept=kept, unused=sorted(unused))


# ---------------------------------------------------------------------------- the LoRA


@functools.cache
def _qwen_renamings() -> list[Any]:
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping

    renamings = get_checkpoint_conversion_mapping("Qwen2_5_VLForConditionalGeneration")
    if not renamings:  # a transformers that dropped the mapping: a bug to fix here
        raise RuntimeError("transformers has no checkpoint conversion mapping for Qwen2.5-VL")
    return renamings


def to_current_layout(name: str) -> str:
    """A Qwen2.5-VL module or weight name in the layout of the installed transformers
    (`model.language_model.layers...`, `model.visual...`), by transformers' own renaming of
    older checkpoints (`model.layers...`, `visual...`); current names are left as they are."""
    from transformers.core_model_loading import rename_source_key

    return rename_source_key(name, _qwen_renamings(), [])[0]


def lora_key(key: str) -> tuple[str, str, str | None] | None:
    """(module in current names, "A" or "B", adapter name or None) of a LoRA key of the
    authors' file; None for a key that is no LoRA matrix."""
    match = _LORA_KEY.fullmatch(key)
    if match is None:
        return None
    module = match["module"]
    for prefix in VLM_PREFIXES:
        module = module.removeprefix(prefix)
    return to_current_layout(module), match["part"], match["adapter"]


@dataclass
class LoraAdapter:
    """The authors' LoRA as a peft adapter of our reasoner's model."""

    tensors: dict[str, torch.Tensor]
    """adapter_model.safetensors as peft saves it: `base_model.model.<module>.lora_A.weight`."""
    modules: list[str]
    """The adapted modules (the adapter config's `target_modules`: exactly these)."""
    r: int
    mapped: dict[str, str]
    """File key -> adapter key."""
    not_adapted: list[str]
    """Linear layers the authors' target names match that the file gives no LoRA."""
    unused: list[str] = field(default_factory=list)
    """File keys that are no LoRA matrix of a linear layer of the model (dropped)."""

    def save(self, path: str | Path, *, alpha: float, dropout: float) -> Path:
        """Write the adapter directory our reasoner loads (`Reasoner.from_pretrained(lora=)`):
        peft's adapter_config.json and adapter_model.safetensors."""
        from peft import LoraConfig

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        # The exact module list, not the authors' suffix names: the adapter then covers
        # what the file covers, no module more.
        config = LoraConfig(
            r=self.r,
            lora_alpha=alpha,
            lora_dropout=dropout,
            target_modules=self.modules,
            bias="none",
        )
        config.save_pretrained(path)
        save_file({k: v.contiguous() for k, v in self.tensors.items()}, path / ADAPTER_WEIGHTS)
        return path


def convert_lora(
    authors: Mapping[str, torch.Tensor],
    model: torch.nn.Module,
    source: str,
    *,
    allow_unused: bool = False,
) -> LoraAdapter:
    """The authors' LoRA (`authors`: their keys, old or current layout) as a peft adapter of
    `model` (a Qwen2.5-VL in current names; a meta-device one is enough: only module names
    and shapes are read). Keys that are no LoRA matrix of one of its linear layers are a
    CheckpointError naming them unless `allow_unused`; a shape that does not fit the layer,
    a lone A or B, mixed ranks or adapters always are."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    pairs: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    adapters: set[str | None] = set()
    unused: list[str] = []
    for key, tensor in authors.items():
        parsed = lora_key(key)
        if parsed is None or parsed[0] not in linears:
            unused.append(key)
            continue
        module, part, adapter = parsed
        adapters.add(adapter)
        if part in pairs.setdefault(module, {}):
            raise CheckpointError(f"{source}: {pairs[module][part][0]} and {key} are both {module}")
        pairs[module][part] = (key, tensor)
    if len(adapters) > 1:
        names = sorted(str(a) for a in adapters)
        raise CheckpointError(f"{source}: LoRA matrices of several adapters {names}; pass one")
    if not pairs:
        raise CheckpointError(
            f"{source}: none of its {len(authors)} tensors is a LoRA matrix of a Qwen2.5-VL "
            f"layer (e.g. {_listing(sorted(authors), 3)}); pass the authors' vlm.safetensors "
            "as --vlm and Qwen2.5-VL-3B-Instruct as --qwen"
        )
    if unused and not allow_unused:
        raise CheckpointError(
            f"{source}: tensors that are no LoRA matrix of a linear layer of the --qwen "
            f"model ({len(unused)}): {_listing(sorted(unused))}; pass --allow-unused to drop them"
        )
    ranks = {}
    tensors: dict[str, torch.Tensor] = {}
    mapped: dict[str, str] = {}
    for module, parts in pairs.items():
        if set(parts) != {"A", "B"}:
            (key, _), missing = next(iter(parts.values())), ({"A", "B"} - set(parts)).pop()
            raise CheckpointError(f"{source}: {key} has no lora_{missing} partner")
        layer = linears[module]
        r = parts["A"][1].shape[0]
        expected = {"A": (r, layer.in_features), "B": (layer.out_features, r)}
        for part, (key, tensor) in parts.items():
            if tuple(tensor.shape) != expected[part]:
                raise CheckpointError(
                    f"{source}: {key} has shape {list(tensor.shape)}, {module} (in "
                    f"{layer.in_features}, out {layer.out_features}) needs "
                    f"{list(expected[part])} for rank {r}: the file is for another model size; "
                    "pass Qwen2.5-VL-3B-Instruct as --qwen"
                )
            ours = f"base_model.model.{module}.lora_{part}.weight"
            tensors[ours] = tensor
            mapped[key] = ours
        ranks.setdefault(r, module)
    if len(ranks) > 1:
        raise CheckpointError(f"{source}: modules of different LoRA ranks {dict(ranks)}")
    not_adapted = [
        name
        for name in linears
        if name.rsplit(".", 1)[-1] in LORA_TARGET_NAMES and name not in pairs
    ]
    return LoraAdapter(
        tensors=tensors,
        modules=sorted(pairs),
        r=next(iter(ranks)),
        mapped=mapped,
        not_adapted=not_adapted,
        unused=sorted(unused),
    )


# ---------------------------------------------------------------------------- the checkpoint


@dataclass
class Converted:
    """Everything `save_converted` writes, read and checked."""

    qwen: Path
    wan: Path
    transformer: Any = None
    """The base DiT with the authors' tensors loaded (None: the base's, copied)."""
    overlay: TransformerOverlay | None = None
    adapter: LoraAdapter | None = None
    lora_alpha: float = LORA_ALPHA
    lora_dropout: float = LORA_DROPOUT
    sources: dict[str, str] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """What conversion.json holds: the inputs, every key mapped, kept or unused."""
        report: dict[str, Any] = {"qwen": str(self.qwen), "wan": str(self.wan)}
        if self.overlay is not None:
            report["vdm"] = {
                "file": self.sources["vdm"],
                "mapped": self.overlay.mapped,
                "kept_from_base": self.overlay.kept,
                "unused": self.overlay.unused,
            }
        if self.adapter is not None:
            report["vlm"] = {
                "file": self.sources["vlm"],
                "r": self.adapter.r,
                "lora_alpha": self.lora_alpha,
                "lora_dropout": self.lora_dropout,
                "modules": self.adapter.modules,
                "mapped": self.adapter.mapped,
                "not_adapted": self.adapter.not_adapted,
                "unused": self.adapter.unused,
            }
        return report


def load_official(
    *,
    qwen: str | Path,
    wan: str | Path,
    vdm: str | Path | None = None,
    vlm: str | Path | None = None,
    allow_unused: bool = False,
    lora_alpha: float = LORA_ALPHA,
    lora_dropout: float = LORA_DROPOUT,
) -> Converted:
    """Read the authors' files and the base models' and check that they fit, writing
    nothing: every problem is a CheckpointError before any output exists."""
    if vdm is None and vlm is None:
        raise CheckpointError(
            "nothing to convert: pass --vdm vdm.safetensors, --vlm vlm.safetensors or both"
        )
    if not lora_alpha > 0 or not 0 <= lora_dropout < 1:
        raise CheckpointError(
            f"--lora-alpha must be > 0 and --lora-dropout in [0, 1); got {lora_alpha}, "
            f"{lora_dropout} (the authors': {LORA_ALPHA}, {LORA_DROPOUT})"
        )
    qwen, wan = Path(qwen), Path(wan)
    _check_qwen(qwen)
    _check_wan(wan)
    converted = Converted(qwen=qwen, wan=wan, lora_alpha=lora_alpha, lora_dropout=lora_dropout)
    if vdm is not None:
        authors = read_safetensors(vdm, "--vdm")
        transformer = _load_transformer(wan / "transformer")
        overlay = overlay_transformer(
            transformer.state_dict(), authors, str(vdm), allow_unused=allow_unused
        )
        # strict: the overlay holds every base key, so nothing can be left out unnoticed.
        transformer.load_state_dict(overlay.state, strict=True)
        converted.transformer, converted.overlay = transformer, overlay
        converted.sources["vdm"] = str(vdm)
    if vlm is not None:
        authors = read_safetensors(vlm, "--vlm")
        converted.adapter = convert_lora(
            authors, _meta_qwen(qwen), str(vlm), allow_unused=allow_unused
        )
        converted.sources["vlm"] = str(vlm)
    return converted


def save_converted(
    converted: Converted, out: str | Path, settings: VANSSettings | None = None
) -> Path:
    """Write the VANS checkpoint atomically: vlm/ = --qwen (+ lora/ the authors' adapter),
    vdm/ = --wan (transformer/ the authors' DiT), vans.yaml = `settings` (default: the
    paper's with the "official" profile: their weights answer as their code does),
    conversion.json = `Converted.report`. The base models are copied, not linked,
    so the checkpoint stands alone (and writing it never touches them)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        shutil.copytree(converted.qwen, tmp / "vlm", ignore=shutil.ignore_patterns(".*"))
        if converted.adapter is not None:
            converted.adapter.save(
                tmp / "vlm" / LORA_DIR,
                alpha=converted.lora_alpha,
                dropout=converted.lora_dropout,
            )
        skip = (".*", "transformer") if converted.transformer is not None else (".*",)
        shutil.copytree(converted.wan, tmp / "vdm", ignore=_top_level(converted.wan, skip))
        if converted.transformer is not None:
            converted.transformer.save_pretrained(tmp / "vdm" / "transformer")
        write_settings(tmp, settings or apply_profile(VANSSettings(), "official"))
        write_json(tmp / REPORT_FILE, converted.report())
    return out


def _top_level(root: Path, patterns: tuple[str, ...]) -> Any:
    """copytree's ignore: `patterns` at any depth for hidden files, only at the top for the
    rest (a `transformer` folder deeper down is not the DiT)."""
    hidden = shutil.ignore_patterns(".*")
    top = shutil.ignore_patterns(*patterns)

    def ignore(directory: str, names: list[str]) -> set[str]:
        return set(top(directory, names) if Path(directory) == root else hidden(directory, names))

    return ignore


def _check_qwen(path: Path) -> None:
    check_model_dir(path)
    if (path / LORA_DIR).exists():
        raise CheckpointError(
            f"--qwen {path}: already holds a LoRA adapter ({LORA_DIR}/); pass the base "
            "Qwen2.5-VL-3B-Instruct directory"
        )


def _check_wan(path: Path) -> None:
    if not path.is_dir():
        raise CheckpointError(f"--wan {path}: no such directory; {EXPECTED_LAYOUT}")
    missing = [name for name in SUBFOLDERS if not (path / name).is_dir()]
    if missing:
        raise CheckpointError(
            f"--wan {path}: missing {', '.join(s + '/' for s in missing)}; {EXPECTED_LAYOUT}"
        )
    check_weights(path / "transformer")


def _load_transformer(path: Path) -> Any:
    from diffusers import WanTransformer3DModel

    try:
        return WanTransformer3DModel.from_pretrained(path, local_files_only=True).eval()
    except LOAD_ERRORS as exc:
        raise CheckpointError(f"--wan {path}: cannot load: {one_line(exc)}") from exc


def _meta_qwen(path: Path) -> torch.nn.Module:
    """The --qwen model's modules without weights (meta device): names and shapes only."""
    from transformers import AutoConfig, Qwen2_5_VLForConditionalGeneration

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"--qwen {path}: cannot read config.json: {exc}") from exc
    if getattr(config, "model_type", None) != "qwen2_5_vl":
        raise CheckpointError(
            f"--qwen {path}: a {getattr(config, 'model_type', '?')!r} model; VANS adapts "
            "Qwen2.5-VL-3B-Instruct ('qwen2_5_vl')"
        )
    with torch.device("meta"):
        return Qwen2_5_VLForConditionalGeneration(config)
