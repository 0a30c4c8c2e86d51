"""Errors raised while loading or saving model checkpoints."""

from __future__ import annotations

from pickle import UnpicklingError

from safetensors import SafetensorError

from vans.errors import VansError


class CheckpointError(VansError):
    """A checkpoint directory is missing, incomplete or does not fit the model being loaded."""


LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, SafetensorError, UnpicklingError)
"""What loading a model part raises on a damaged, truncated or foreign file (a pickle where
safetensors belong included): each becomes a CheckpointError naming the part."""
