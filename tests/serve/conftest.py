"""A real `embedrank serve` process on a free loopback port, and the models it serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the server needs the serve extra (pip install 'embedrank[serve]')")
pytest.importorskip("prometheus_client", reason="the server needs the serve extra (pip install 'embedrank[serve]')")

from tests.conftest import SHARED_DATA  # noqa: E402
from tests.models.cross_encoder_fixtures import cross_encoder_folders  # noqa: E402

STARTUP_TIMEOUT_S = 180


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, body=None, headers: dict | None = None, method: str | None = None, timeout: float = 120):
    """(status, headers, parsed JSON or text) of one HTTP request, errors included."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method or ("POST" if data is not None else "GET"),
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            status, head, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        status, head, raw = error.code, dict(error.headers), error.read()
    try:
        return status, head, json.loads(raw)
    except ValueError:
        return status, head, raw.decode(errors="replace")


class Server:
    """`python -m embedrank.apps.cli serve ARGS --port P` in its own process group."""

    def __init__(self, args: list[str], log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with open(log, "w") as out:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "embedrank.apps.cli", "serve", *args, "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=dict(os.environ))
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                status, _, _ = request(self.url + "/health", timeout=5)
                if status == 200:
                    return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the server did not become healthy in {STARTUP_TIMEOUT_S} s:\n{log.read_text()[-3000:]}")

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


@pytest.fixture(scope="session")
def serve_models(minilm_export, minilm_source, tmp_path_factory):
    """(encoder folder, cross-encoder folder, saved retriever folder over ADI)."""
    if not (SHARED_DATA / "adi").is_dir():
        pytest.skip(f"needs the ADI data set in {SHARED_DATA} (see its README)")
    import embedrank
    from embedrank.index import FlatIndex

    _, cross_encoder = cross_encoder_folders(tmp_path_factory, minilm_source, full=False)
    corpus, _, _ = embedrank.load_beir(SHARED_DATA / "adi", split="test")
    encoder = embedrank.Encoder.load(minilm_export)
    retriever = embedrank.Retriever(encoder, FlatIndex(encoder.dim), embedrank.CrossEncoder.load(cross_encoder),
                                    candidates=20, top_k=5, lexical=True)
    # metadata for /search's filter: the first and second half of ADI's documents
    retriever.add(corpus, metadata={d: {"half": "first" if i < len(corpus) // 2 else "second"}
                                    for i, d in enumerate(corpus)})
    folder = retriever.save(tmp_path_factory.mktemp("serve") / "adi-retriever")
    return minilm_export, cross_encoder, folder


@pytest.fixture(scope="module")
def server(serve_models, tmp_path_factory):
    """The server with every endpoint: model, reranker and retriever."""
    model, cross_encoder, retriever = serve_models
    log = tmp_path_factory.mktemp("server-log") / "server.log"
    server = Server(["--model", str(model), "--reranker", str(cross_encoder), "--retriever", str(retriever),
                     "--max-client-batch-size", "64", "--payload-limit", "200000"], log)
    yield server
    server.stop()
