"""`vans convert-official`: the VANS authors' released weights as a VANS checkpoint.

The mapping and its checks are `vans.models.official`; this prints what was mapped, what
was kept from the base models and what was dropped (docs/official.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.cli.loading import quiet_model_libraries
from vans.outputs import claim_output, mark_output

console = Console(soft_wrap=True)


def convert_official(
    qwen: Annotated[Path, typer.Option(help="Base Qwen2.5-VL-3B-Instruct directory.")],
    wan: Annotated[Path, typer.Option(help="Base Wan2.1-T2V-1.3B-Diffusers directory.")],
    out: Annotated[Path, typer.Option(help="VANS checkpoint directory to write.")],
    vdm: Annotated[
        Path | None, typer.Option(help="The authors' vdm.safetensors (the fine-tuned DiT).")
    ] = None,
    vlm: Annotated[
        Path | None, typer.Option(help="The authors' vlm.safetensors (the reasoner's LoRA).")
    ] = None,
    allow_unused: Annotated[
        bool, typer.Option(help="Drop (and list) file tensors that map to no weight.")
    ] = False,
    lora_alpha: Annotated[float, typer.Option(help="LoRA alpha (the authors': 32).")] = 32.0,
    lora_dropout: Annotated[float, typer.Option(help="LoRA dropout (the authors': 0.05).")] = 0.05,
    overwrite: Annotated[bool, typer.Option(help="Replace whatever --out holds.")] = False,
) -> None:
    """Convert the authors' vdm.safetensors / vlm.safetensors onto the base models."""
    quiet_model_libraries()
    from vans.models.official import REPORT_FILE, fold_layers, load_official, save_converted

    with console.status("reading and checking the weights"):
        converted = load_official(
            qwen=qwen,
            wan=wan,
            vdm=vdm,
            vlm=vlm,
            allow_unused=allow_unused,
            lora_alpha=lora_alpha,
            lora_dropout=lora_dropout,
        )
    # Claimed only now: a file that does not convert leaves no folder behind.
    settings = {"qwen": qwen, "wan": wan, "vdm": vdm, "vlm": vlm, "allow_unused": allow_unused}
    claim_output(out, "convert-official", settings, resumable=False, overwrite=overwrite)
    with console.status("writing the checkpoint (copying the base models)"):
        path = save_converted(converted, out)
    mark_output(path, "convert-official", settings)

    def listing(title: str, keys: list[str]) -> None:
        console.print(f"  {title}: {len(keys)}", markup=False, highlight=False)
        for line in fold_layers(keys):
            console.print(f"    {line}", markup=False, highlight=False)

    if (overlay := converted.overlay) is not None:
        console.print(
            f"{vdm}: {len(overlay.mapped)} tensors onto the base transformer (diffusers' "
            f"rename rules), {len(overlay.kept)} of its {len(overlay.state)} kept from --wan",
            markup=False,
            highlight=False,
        )
        listing("kept from the base (not in the file)", overlay.kept)
        if overlay.unused:
            listing("dropped (--allow-unused: map to no weight)", overlay.unused)
    if (adapter := converted.adapter) is not None:
        console.print(
            f"{vlm}: LoRA r {adapter.r}, alpha {lora_alpha:g}, dropout {lora_dropout:g} on "
            f"{len(adapter.modules)} layers",
            markup=False,
            highlight=False,
        )
        listing("adapted", adapter.modules)
        if adapter.not_adapted:
            listing(
                "matched by the authors' target names, no LoRA in the file", adapter.not_adapted
            )
        if adapter.unused:
            listing("dropped (--allow-unused: no LoRA matrix of a layer)", adapter.unused)
    console.print(
        f"checkpoint: {path} (every key: {path / REPORT_FILE})", markup=False, highlight=False
    )
