"""`vans serve`: the web demo (`vans.web`) on 127.0.0.1."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from vans.assets import TOYWORLD_CHECKPOINT
from vans.cli.apps import PROFILE_HELP
from vans.cli.loading import parse_dtype, quiet_model_libraries
from vans.devices import resolve_device
from vans.errors import VansError

console = Console(soft_wrap=True)


def serve(
    checkpoint: Annotated[
        Path, typer.Option(help="VANS checkpoint (default: the shipped toy-world model).")
    ] = TOYWORLD_CHECKPOINT,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes the demo to your network.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 7860,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    dtype: Annotated[
        str, typer.Option(help="float32, or bfloat16 on a GPU (the VAE stays float32).")
    ] = "float32",
    profile: Annotated[str | None, typer.Option(help=PROFILE_HELP)] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.1, help="Largest upload accepted, in MB.")
    ] = 100.0,
) -> None:
    """Serve the web demo: upload a video or an image, ask questions, watch the answers."""
    quiet_model_libraries()
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home: offline
    from vans.models.checkpoint import check_checkpoint_dir
    from vans.models.pipeline import VANSPipeline
    from vans.models.profiles import check_profile
    from vans.web import build_app

    resolve_device(device)
    if profile is not None:
        check_profile(profile)
    if not checkpoint.exists() and checkpoint == TOYWORLD_CHECKPOINT:
        raise VansError(
            f"{checkpoint}: the shipped toy-world checkpoint is missing from this install; "
            "reinstall vans, or pass --checkpoint"
        )
    check_checkpoint_dir(checkpoint)
    with console.status(f"loading {checkpoint}"):
        pipeline = VANSPipeline.from_checkpoint(
            checkpoint, device=device, dtype=parse_dtype(dtype), profile=profile
        )
    app = build_app(pipeline, max_upload_mb=max_upload_mb)
    console.print(f"vans serve: http://{host}:{port} ({checkpoint})", markup=False)
    try:
        app.queue().launch(
            server_name=host,
            server_port=port,
            allowed_paths=[str(app.vans_out_dir)],
            max_file_size=int(max_upload_mb * 2**20),
            show_error=False,
            share=False,
            quiet=True,
        )
    except OSError as exc:  # the port is taken, or the address cannot be bound
        raise VansError(f"cannot listen on {host}:{port}: {exc}; pass another --port") from None
