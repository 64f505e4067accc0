"""Builds the C++ test cpp/tests/isa_levels_test.cpp (every kernel family at every ISA level
this CPU supports, against the scalar level) with CMake and runs it through CTest."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _cmake() -> str | None:
    found = shutil.which("cmake")
    if found:
        return found
    try:  # the cmake wheel, when installed in this environment
        import cmake

        return str(Path(cmake.CMAKE_BIN_DIR) / "cmake")
    except ImportError:
        return None


def test_every_isa_level_matches_scalar(tmp_path):
    cmake = _cmake()
    if cmake is None:
        pytest.skip("cmake is not installed (pip install cmake)")
    if not (shutil.which("c++") or shutil.which("g++") or os.environ.get("CXX")):
        pytest.skip("no C++ compiler found")
    build = tmp_path / "build"
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    configure = subprocess.run(
        [cmake, "-S", str(ROOT), "-B", str(build), *generator, "-DCMAKE_BUILD_TYPE=Release",
         "-DEMBEDRANK_PYTHON=OFF", "-DEMBEDRANK_BUILD_TESTS=ON"],
        capture_output=True, text=True, timeout=300)
    assert configure.returncode == 0, configure.stdout[-3000:] + configure.stderr[-3000:]
    compiled = subprocess.run(
        [cmake, "--build", str(build), "--target", "embedrank_isa_levels_test", "--parallel", str(os.cpu_count() or 2)],
        capture_output=True, text=True, timeout=600)
    assert compiled.returncode == 0, compiled.stdout[-3000:] + compiled.stderr[-3000:]
    ctest = Path(cmake).with_name("ctest")
    run = subprocess.run([str(ctest) if ctest.exists() else "ctest", "--output-on-failure"], cwd=build,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-3000:]
    assert "0 failures" in run.stdout or "tests passed" in run.stdout, run.stdout[-3000:]
