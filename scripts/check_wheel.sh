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
# the attention rewrite and the custom-op library work with the core dependencies alone
import tempfile, pathlib, onnx
from embedrank.runtime import attention_fusion, sessions
from embedrank.bench.native_attention import core_model
path = pathlib.Path(tempfile.mkdtemp()) / "attention.onnx"
onnx.save(core_model(), str(path))
session, fused = sessions.make_session(path, [sessions.CPU], 1, native_attention=True)
x = np.ones((1, 4, 64), np.float32)
assert fused == 1 and session.run(None, {"q": x, "k": x, "v": x, "attention_mask": np.ones((1, 4), np.int64)})[0].shape == (1, 4, 64)
print("wheel imports and searches:", K.capabilities(), "with", attention_fusion.library_path().name)
PY
