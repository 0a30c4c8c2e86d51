"""Errors raised while loading or saving model checkpoints."""

from __future__ import annotations

from vans.errors import VansError


class CheckpointError(VansError):
    """A checkpoint directory is missing, incomplete or does not fit the model being loaded."""
