#!/usr/bin/env bash
# Builds a wheel with `pip wheel .`, installs it into a fresh venv and imports it there,
# running one search at the detected ISA level. Usage: bash scripts/check_wheel.sh [WORKDIR]
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${1:-$(mktemp -d)}
PY=${PYTHON:-python3}
mkdir -p "$WORK"
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps . -w "$WORK/dist"
WHEEL=$(ls "$WORK"/dist/embedrank-*.whl)
echo "built $(basename "$WHEEL")"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check "$WHEEL"
cd "$WORK"  # away from the source tree, so the import can only come from the wheel
"$WORK/venv/bin/python" - <<'PY'
import numpy as np
import embedrank
from embedrank import kernels as K

assert "site-packages" in embedrank.__file__, embedrank.__file__
base = K.normalize(np.random.default_rng(0).standard_normal((1000, 64)).astype(np.float32))
scores, ids = K.topk_float32(base[:5], base, k=3)
assert (ids[:, 0] == np.arange(5)).all(), ids
from embedrank import native_attention
assert native_attention.library_path().is_file()
print("wheel imports and searches:", K.capabilities(), "with", native_attention.library_path().name)
PY
