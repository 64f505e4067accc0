"""Seeding, devices, and mixed precision for training (torch)."""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from embedrank.errors import InvalidValueError

__all__ = ["seed_everything", "resolve_device", "autocast", "RandomState"]


def seed_everything(seed: int) -> None:
    """Seeds Python, numpy and torch (CPU and CUDA)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidValueError(f"seed must be a non-negative integer, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(device: str | None) -> torch.device:
    """"cpu", "cuda", "cuda:N" or None (cuda when available, else cpu)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise InvalidValueError(f"unknown device {device!r}; expected 'cpu', 'cuda' or 'cuda:N'") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidValueError(f"device {device!r} asked for but CUDA is not available")
    if resolved.type not in ("cpu", "cuda"):
        raise InvalidValueError(f"unsupported device {device!r}; expected 'cpu' or 'cuda'")
    return resolved


PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """None for fp32; bf16/fp16 on CUDA ("auto": bf16 when supported, else fp16; fp32 on CPU)."""
    if precision not in PRECISIONS:
        raise InvalidValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32" or (precision == "auto" and device.type == "cpu"):
        return None
    if device.type == "cpu":
        raise InvalidValueError(f"precision {precision!r} needs a GPU; train in fp32 on CPU")
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if precision == "bf16" else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


class RandomState:
    """The torch RNG state (CPU and the current CUDA device), to replay dropout exactly."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextlib.contextmanager
    def replay(self):
        """Runs the block with the saved state, then restores the state it found."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield
