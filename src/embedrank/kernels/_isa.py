"""Choosing the ISA level of the native kernels, once, at import."""

from __future__ import annotations

import os

from embedrank import _kernels

ISA_LEVELS = ("scalar", "avx2", "avx512")
ISA_ENV_VAR = "EMBEDRANK_ISA"


def _apply_isa_from_environment() -> None:
    requested = os.environ.get(ISA_ENV_VAR, "").strip().lower()
    if not requested:
        return
    if requested not in ISA_LEVELS:
        raise ImportError(
            f"{ISA_ENV_VAR}={requested!r} is not a known ISA level; expected one of {', '.join(ISA_LEVELS)}"
        )
    highest = _kernels.highest_isa()
    if ISA_LEVELS.index(requested) > ISA_LEVELS.index(highest):
        raise ImportError(
            f"{ISA_ENV_VAR}={requested!r} is above what this CPU supports (highest: {highest!r}; "
            f"detected features: {', '.join(_kernels.detected_features()) or 'none'})"
        )
    _kernels.set_isa(requested)


def capabilities() -> dict:
    """The CPU features seen and the ISA level the kernels run at.

    Returns ``{"detected": [feature, ...], "active": "scalar" | "avx2" | "avx512"}``. Within
    the avx512 level, VNNI (int8 search) and VPOPCNTDQ (Hamming search) are used when they
    appear in ``detected``.
    """
    return {"detected": list(_kernels.detected_features()), "active": _kernels.active_isa()}


_apply_isa_from_environment()
