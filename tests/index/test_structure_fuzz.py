"""Structure fuzzer for saved indexes: mutated manifest fields, ids, metadata rows and bytes,
graph and vector bytes, with checksums fixed up. The loads run in a child process
(tests/index/fuzz_worker.py) so that a crash shows up as a signal rather than ending pytest;
every load must raise IndexFormatError or give an index that works."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import embedrank
from tests.conftest import REPO

pytestmark = pytest.mark.slow

FUZZ_S = 25.0
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(embedrank.__file__).parents[1]), str(REPO)]))


def test_mutated_indexes_never_crash_and_load_or_raise_index_format_error(tmp_path):
    run = subprocess.run([sys.executable, "-m", "tests.index.fuzz_worker", str(tmp_path), "16", str(FUZZ_S)],
                         cwd=REPO, env=ENV, capture_output=True, text=True, timeout=FUZZ_S + 120)
    if run.returncode < 0:
        pytest.fail(f"the fuzzed load crashed the process ({signal.Signals(-run.returncode).name}); "
                    f"last output: {run.stdout[-3000:]}")
    assert run.returncode == 0, run.stdout[-4000:].replace(" | ", "\n") + run.stderr[-2000:]
    outcome, tries, refused, loaded = run.stdout.split()
    assert outcome == "done" and int(tries) >= 100 and int(refused) > 0 and int(loaded) > 0, run.stdout
