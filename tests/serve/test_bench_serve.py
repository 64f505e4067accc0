"""The load-test harness (benchmarks/bench_serve.py): a phase ends at its deadline plus the
grace time even when the server never answers, and a quick run against embedrank alone ends
on its own with every request answered."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]


def _harness():
    spec = importlib.util.spec_from_file_location("bench_serve", REPO / "benchmarks" / "bench_serve.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_phase_against_a_silent_server_is_cut_at_the_grace_time():
    bench = _harness()

    async def run():
        async def never_answer(reader, writer):
            try:
                await asyncio.sleep(3600)
            finally:
                writer.close()

        listener = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        port = listener.sockets[0].getsockname()[1]
        server = SimpleNamespace(port=port, path="/v1/embeddings",
                                 process=SimpleNamespace(pid=os.getpid(), poll=lambda: None))
        try:
            started = time.monotonic()
            phase = await bench.load(server, 16, [(b'{"input": ["a"]}', 1)], seconds=0.3, grace=0.5)
            return phase, time.monotonic() - started
        finally:
            listener.close()

    phase, elapsed = asyncio.run(run())
    assert elapsed < 5
    assert phase["cut"] == 16 and phase["texts"] == 0 and phase["latencies"] == []


@pytest.mark.slow
def test_a_quick_run_against_embedrank_ends_with_every_request_answered(minilm_export, tmp_path):
    if not (SHARED_DATA / "scifact").is_dir():
        pytest.skip(f"needs the SciFact data set in {SHARED_DATA}")
    output = tmp_path / "serve.json"
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "bench_serve.py"), "--model", str(minilm_export),
                          "--variants", "fp32", "--quick", "--data", str(SHARED_DATA / "scifact"),
                          "--output", str(output), "--markdown", str(tmp_path / "serve.md"),
                          "--log-dir", str(tmp_path / "logs")],
                         capture_output=True, text=True, timeout=600, env=dict(os.environ))
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results = json.loads(output.read_text())
    assert set(results["loads"]) == {"1 clients x 1 query", "8 clients x 1 query", "1 clients x 32 documents"}
    for systems in results["loads"].values():
        assert set(systems) == {"embedrank fp32", "embedrank fp32, no batching"}
        for figures in systems.values():
            assert figures["requests"] > 0 and figures["errors"] == {} and figures["cut"] == 0
            assert figures["cpu_s_per_1000_texts"] > 0
    assert [s["server"] for s in results["sequential"]] == ["embedrank fp32", "embedrank fp32, no batching"]
    assert "| target | measured | met |" in (tmp_path / "serve.md").read_text()
