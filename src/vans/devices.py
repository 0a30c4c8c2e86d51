"""Which device a model may be put on, checked before anything loads: a device this torch
cannot use fails deep inside a library with a multi-line message, after seconds of loading."""

from __future__ import annotations

import torch

from vans.errors import VansError

KINDS = ("cpu", "cuda", "mps")
"""Device types `vans` runs on."""


class DeviceError(VansError):
    """A device name that is not valid, or not usable on this machine; says why."""


def resolve_device(name: str | torch.device) -> torch.device:
    """`name` ("cpu", "cuda", "cuda:1", "mps") as a device this machine has."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        kinds = ", ".join(KINDS)
        raise DeviceError(f"device {name!r}: not a device name; use {kinds} or cuda:N") from None
    if device.type not in KINDS:
        raise DeviceError(f"device {name!r}: vans runs on {', '.join(KINDS)}, not {device.type}")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = "has no CUDA support" if torch.version.cuda is None else "sees no GPU"
            raise DeviceError(f"device {name!r}: this torch {build}; use --device cpu")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise DeviceError(f"device {name!r}: this machine has {count} GPU(s), cuda:0..")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {name!r}: MPS is not available here; use --device cpu")
    return device
