"""Choosing the ISA level of the native kernels, once, at import.

EMBEDRANK_ISA (and EMBEDRANK_AMX) are read by the C++ core alone (cpp/core/dispatch.cpp), the
same code the onnxruntime op library uses; here its error becomes an ImportError.
"""

from __future__ import annotations

from embedrank import _kernels
from embedrank.errors import EnvironmentSettingError

ISA_LEVELS = ("scalar", "avx2", "avx512")
ISA_ENV_VAR = "EMBEDRANK_ISA"


def _apply_isa_from_environment() -> None:
    try:
        _kernels.apply_environment()
    except ValueError as error:
        raise EnvironmentSettingError(str(error)) from None


def capabilities() -> dict:
    """The CPU features seen and the ISA level the kernels run at.

    Returns ``{"detected": [feature, ...], "active": "scalar" | "avx2" | "avx512"}``. Within
    the avx512 level, VNNI (int8 search), VPOPCNTDQ (Hamming search) and AMX (int8 search)
    are used when they appear in ``detected``; ``avx512_bf16`` and ``amx_bf16`` are reported
    too.
    """
    return {"detected": list(_kernels.detected_features()), "active": _kernels.active_isa()}


_apply_isa_from_environment()
