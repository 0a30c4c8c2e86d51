"""Loading models from the CLI: the slow imports, their noise, and the --dtype option."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vans.errors import VansError

if TYPE_CHECKING:
    import torch


def quiet_model_libraries() -> None:
    """Import the model stack (slow: only the commands that need it) and silence its loading
    bars and warnings: our own progress bar is the one that matters."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    for logging in (transformers_logging, diffusers_logging):
        logging.disable_progress_bar()
        logging.set_verbosity_error()


def parse_dtype(name: str) -> torch.dtype:
    import torch

    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if name not in choices:
        raise VansError(f"--dtype must be one of {', '.join(choices)}, got {name!r}")
    return choices[name]
