#!/usr/bin/env bash
# Builds embedrank._kernels with AddressSanitizer + UndefinedBehaviorSanitizer and runs the
# kernel tests (and the lexical index, whose BM25 kernel reads postings) against it (every
# ISA level: the ISA tests start one subprocess per level,
# which inherits the sanitizer). Usage: bash scripts/sanitize.sh [pytest args...]
# Needs the test venv (make test creates .venv) for Python, numpy, pytest and hypothesis.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
BUILD=build/sanitize
STAGE=$BUILD/stage

cmake -S . -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DEMBEDRANK_SANITIZE=ON \
  -DPython_EXECUTABLE="$("$PY" -c 'import sys; print(sys.executable)')" \
  -Dpybind11_DIR="$("$PY" -m pybind11 --cmakedir)" >/dev/null
cmake --build "$BUILD" --parallel 2

rm -rf "$STAGE" && mkdir -p "$STAGE"
cp -r src/embedrank "$STAGE/embedrank"
cp "$BUILD"/_kernels*.so "$STAGE/embedrank/"

LIBASAN=$(gcc -print-file-name=libasan.so)
LIBSTDCXX=$(g++ -print-file-name=libstdc++.so.6)
export PYTHONPATH="$PWD/$STAGE"
# libstdc++ preloaded too: ASan's __cxa_throw interceptor must find it at start-up, before
# Python loads the extension (otherwise the first C++ exception aborts with a CHECK failure).
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
# CPython itself leaks by design at exit: leak checking would only report the interpreter.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
"$PY" -c 'import embedrank, sys; assert "stage" in embedrank.__file__, embedrank.__file__; print("sanitized build:", embedrank.__file__)'
"$PY" -m pytest tests/kernels tests/index/test_lexical.py -q -p no:cacheprovider "$@"
