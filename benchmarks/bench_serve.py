"""Load test of `embedrank serve` against infinity, side by side on this machine.

    python benchmarks/bench_serve.py --model MODEL_DIR --hf HF_DIR [--infinity-venv VENV] [--quick]

Starts the servers on loopback ports, each idle while another takes the load: embedrank per
variant (cross-request batching on; fp32 is infinity's precision), the first variant with
batching off (--max-batch-requests 1: one model call per request) and, when --infinity-venv is
given, infinity (`infinity_emb v2 --model-id HF_DIR --device cpu`, its own venv since it needs
numpy<2). For each load (1, 8, 64 and 256 concurrent clients sending one short SciFact query
per request, then clients sending batches of 32 SciFact documents) every system takes the load
in turn, order rotating, for --seconds per round (--rounds rounds), through the same
OpenAI-shaped /embeddings endpoint and the same client. Reports texts/s, p50/p99 request
latency and CPU seconds per 1,000 texts (the server process's user+system time), plus the
sequential-client overhead over Encoder.encode in process. Writes --output (JSON) and
--markdown; the servers' output goes to log files in --log-dir.

The client is a minimal keep-alive HTTP/1.1 connection per simulated client (as wrk and
hey hold one each), not httpx: httpcore 1.0.9's pool rescans every connection on each
request it assigns or releases, so with 64 connections it burnt ~17 ms of CPU a request and
topped out near 56 requests/s against an endpoint the server answers 2,000 times a second;
on two cores it measured itself, and at 256 clients it crawled.

Every phase is bounded: clients stop sending at the deadline, requests still out get
--grace seconds to finish and are then cancelled (counted as `cut`), so no server, however
slow or wedged, can hang the run; each phase prints one line when it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8, 64, 256)
T0 = time.monotonic()


def log(message: str) -> None:
    print(f"[{time.monotonic() - T0:6.0f} s] {message}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process (all its threads) and its reaped children, from
    /proc/PID/stat (fields 14-17: utime, stime, cutime, cstime)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


# -- the client ------------------------------------------------------------------------------
class HttpError(Exception):
    """The server's answer could not be read as HTTP/1.1."""


class Connection:
    """One keep-alive HTTP/1.1 connection; (re)opened on demand, closed on any error."""

    def __init__(self, port: int, host: str = "127.0.0.1"):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) of one request."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=2 ** 22)
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
        if body is not None:
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        try:
            self.writer.write(head.encode() + b"\r\n" + (body or b""))
            raw = await self.reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ", 2)
            if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
                raise HttpError(f"not an HTTP/1.1 status line: {lines[0]!r}")
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, value = line.split(":", 1)
                    headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                data = await self.reader.readexactly(int(headers["content-length"]))
            elif headers.get("transfer-encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                    chunks.append(await self.reader.readexactly(size + 2))
                    if size == 0:
                        break
                data = b"".join(c[:-2] for c in chunks)
            else:
                data = await self.reader.read()
                self.close()
            if headers.get("connection", "").lower() == "close":
                self.close()
            return int(parts[1]), data
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


# -- the servers -----------------------------------------------------------------------------
class Server:
    """A server process in its own process group, its output in a log file (never a pipe
    nobody reads)."""

    def __init__(self, name: str, command: list[str], port: int, path: str, models_path: str, log_dir: Path,
                 env: dict | None = None):
        self.name, self.port, self.path, self.models_path = name, port, path, models_path
        self.model = ""
        self.log_path = log_dir / (name.replace(" ", "_").replace(",", "") + ".log")
        with open(self.log_path, "wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                            start_new_session=True, env=env or dict(os.environ))

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def body(self, texts: list[str]) -> bytes:
        return json.dumps({"input": texts, "model": self.model}).encode()

    async def wait_ready(self, timeout: float) -> None:
        """Waits for the model list, takes the served model's name from it, then checks that one
        embedding request answers 200 with one vector; fails fast (with the answer) otherwise."""
        deadline = time.monotonic() + timeout
        connection = Connection(self.port)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name} did not answer in {timeout:.0f} s:\n{self.log_tail()}")
                try:
                    status, data = await asyncio.wait_for(connection.request("GET", self.models_path), 30)
                except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, HttpError):
                    await asyncio.sleep(0.5)  # not listening yet
                    continue
                if status == 200:
                    break
                await asyncio.sleep(0.5)
            self.model = json.loads(data)["data"][0]["id"]
            status, data = await asyncio.wait_for(connection.request("POST", self.path, self.body(["ready?"])), 60)
            if status != 200 or len(json.loads(data).get("data", [])) != 1:
                raise RuntimeError(f"{self.name} answered {status} to an embedding request: {data[:500]!r}")
        finally:
            connection.close()

    def terminate(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (if not sent yet), then SIGKILL to the process group after `timeout` s."""
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def stop_all(servers: list[Server], timeout: float = 30) -> None:
    """Stops every server, all told at once so that they drain side by side."""
    for server in servers:
        server.terminate()
    deadline = time.monotonic() + timeout
    for server in servers:
        server.stop(max(0.0, deadline - time.monotonic()))


# -- one phase -------------------------------------------------------------------------------
async def load(server: Server, clients: int, bodies: list[tuple[bytes, int]], seconds: float, grace: float) -> dict:
    """`clients` concurrent clients, each on its own connection, posting `bodies` ((request,
    texts in it)) until `seconds` have passed; requests still out then get `grace` seconds,
    after which they are cancelled (`cut`). The raw counts of one phase."""
    latencies: list[float] = []
    done_texts = 0
    errors: collections.Counter = collections.Counter()
    first_error: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    cpu_before, client_cpu_before = cpu_seconds(server.process.pid), time.process_time()

    async def client(i: int) -> None:
        nonlocal done_texts
        connection = Connection(server.port)
        k = i
        try:
            while time.perf_counter() < stop_at:
                body, n = bodies[k % len(bodies)]
                k += clients
                sent = time.perf_counter()
                try:
                    status, data = await connection.request("POST", server.path, body)
                except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, HttpError,
                        ValueError) as error:
                    errors[type(error).__name__] += 1
                    first_error[:] = first_error or [f"{type(error).__name__}: {error}"]
                    await asyncio.sleep(0.1)  # a refused or dropped connection must not spin
                    continue
                if status != 200:
                    errors[f"HTTP {status}"] += 1
                    first_error[:] = first_error or [f"HTTP {status}: {data[:300]!r}"]
                    await asyncio.sleep(0.1)
                    continue
                latencies.append(time.perf_counter() - sent)
                done_texts += n
        finally:
            connection.close()

    tasks = [asyncio.ensure_future(client(i)) for i in range(clients)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + grace)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    wall = time.perf_counter() - started
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            errors[type(task.exception()).__name__] += 1
            first_error[:] = first_error or [repr(task.exception())]
    alive = server.process.poll() is None
    return {"texts": done_texts, "latencies": latencies, "wall_s": wall,
            "cpu_s": cpu_seconds(server.process.pid) - cpu_before if alive else None,
            "client_cpu_s": time.process_time() - client_cpu_before,
            "errors": dict(errors), "first_error": first_error[0] if first_error else None,
            "cut": len(pending), "alive": alive, "loadavg_1min": os.getloadavg()[0]}


async def warm(server: Server, clients: int, bodies: list[tuple[bytes, int]], timeout: float) -> None:
    """One request from each of up to 8 clients before a phase of single texts, bounded (the
    servers warmed their models when they started; batches of documents go without)."""
    if bodies[0][1] != 1:
        return
    n = min(clients, 8)
    connections = [Connection(server.port) for _ in range(n)]
    try:
        await asyncio.wait_for(asyncio.gather(*(c.request("POST", server.path, bodies[i % len(bodies)][0])
                                                for i, c in enumerate(connections)), return_exceptions=True), timeout)
    except asyncio.TimeoutError:
        pass
    finally:
        for c in connections:
            c.close()


def summarize(phases: list[dict]) -> dict:
    """One system's figures at one load, pooled over its rounds."""
    texts = sum(p["texts"] for p in phases)
    wall = sum(p["wall_s"] for p in phases)
    ms = np.array([x for p in phases for x in p["latencies"]]) * 1e3
    cpu = [p["cpu_s"] for p in phases]
    errors: collections.Counter = collections.Counter()
    for p in phases:
        errors.update(p["errors"])
    return {"texts_per_s": texts / wall if wall else 0.0, "texts": texts, "requests": int(ms.size),
            "wall_s": wall,
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
            "cpu_s_per_1000_texts": 1000 * sum(cpu) / texts if texts and None not in cpu else None,
            "client_cpu_s_per_1000_texts": 1000 * sum(p["client_cpu_s"] for p in phases) / texts if texts else None,
            "errors": dict(errors), "cut": sum(p["cut"] for p in phases),
            "first_error": next((p["first_error"] for p in phases if p["first_error"]), None),
            "loadavg_1min": [p["loadavg_1min"] for p in phases]}


# -- the sequential client -------------------------------------------------------------------
# between the in-process call and the HTTP call of the sequential comparison
PAUSE_S = 0.01


async def sequential_overhead(model_dir: str, variant: str, server: Server, queries: list[str], n: int) -> dict:
    """Median latency of one query per call, Encoder.encode in process and one keep-alive HTTP
    client, alternating call by call so that the machine's noise hits both alike."""
    import embedrank

    encoder = embedrank.Encoder.load(model_dir, variant=variant)
    connection = Connection(server.port)
    local, remote = [], []
    before = None
    try:
        for i, q in enumerate(queries[:n + 5]):
            started = time.perf_counter()
            encoder.encode([q], show_progress=False)
            encode_s = time.perf_counter() - started
            # a pause before each call: onnxruntime's worker threads (here and in the server)
            # busy-wait for a while after a run, and would otherwise take the other call's core
            await asyncio.sleep(PAUSE_S)
            started = time.perf_counter()
            status, data = await asyncio.wait_for(connection.request("POST", server.path, server.body([q])), 60)
            http_s = time.perf_counter() - started
            if status != 200:
                raise RuntimeError(f"{server.name} answered {status}: {data[:300]!r}")
            await asyncio.sleep(PAUSE_S)
            if i == 4:
                before = await server_stages(connection)
            if i >= 5:  # the first calls warm both up
                local.append(encode_s)
                remote.append(http_s)
        stages = await server_stages(connection)
    finally:
        connection.close()
    encode_ms, http_ms = statistics.median(local) * 1e3, statistics.median(remote) * 1e3
    p10 = lambda xs: float(np.percentile(xs, 10)) * 1e3  # noqa: E731 - the quietest calls on a shared machine
    return {"server": server.name, "variant": variant, "calls": len(local), "encode_ms": encode_ms,
            "http_ms": http_ms, "overhead_ms": http_ms - encode_ms,
            "paired_overhead_ms": statistics.median(r - l for r, l in zip(remote, local)) * 1e3,
            "encode_mean_ms": statistics.mean(local) * 1e3, "http_mean_ms": statistics.mean(remote) * 1e3,
            "encode_p10_ms": p10(local), "http_p10_ms": p10(remote), "overhead_p10_ms": p10(remote) - p10(local),
            # where the time went inside the server (means from its /metrics): waiting for the
            # model thread, the model call (tokenizing included), the whole endpoint
            **{f"server_{k}_mean_ms": 1e3 * (stages[k][0] - before[k][0]) / max(1, stages[k][1] - before[k][1])
               for k in stages}}


async def server_stages(connection: Connection) -> dict:
    """(sum of seconds, count) per stage from embedrank's /metrics: queue wait, inference and
    the /v1/embeddings endpoint."""
    _, data = await asyncio.wait_for(connection.request("GET", "/metrics"), 60)
    wanted = {'embedrank_stage_seconds_{}{{model="embed",stage="queue"}}': "queue",
              'embedrank_stage_seconds_{}{{model="embed",stage="inference"}}': "inference",
              'embedrank_request_seconds_{}{{endpoint="/v1/embeddings"}}': "endpoint"}
    values = dict(line.rsplit(" ", 1) for line in data.decode().splitlines() if line and not line.startswith("#"))
    return {name: (float(values.get(key.format("sum"), 0)), float(values.get(key.format("count"), 0)))
            for key, name in wanted.items()}


def in_process(model_dir: str, variant: str, queries: list[str], seconds: float) -> dict:
    """Encoder.encode's own texts/s on the same queries, one per call and 64 per call: what the
    model allows on this machine without any server, and what batching alone can gain."""
    import embedrank

    encoder = embedrank.Encoder.load(model_dir, variant=variant)
    encoder.encode(queries[:64], show_progress=False)
    out = {"variant": variant}
    for batch in (1, 64):
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            i = done % len(queries)
            encoder.encode((queries + queries)[i:i + batch], batch_size=batch, show_progress=False)
            done += batch
        out[f"batch_{batch}_texts_per_s"] = done / (time.perf_counter() - started)
    return out


# -- the report ------------------------------------------------------------------------------
def _f(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def targets(results: dict) -> list[dict]:
    """The issue's targets, judged on the fp32 server (infinity's precision)."""
    out = []
    loads = results["loads"]
    first = results["variants"][0]
    ours, unbatched = f"embedrank {first}", f"embedrank {first}, no batching"
    at64 = loads.get("64 clients x 1 query", {})
    if ours in at64 and "infinity" in at64:
        ratio = at64[ours]["texts_per_s"] / at64["infinity"]["texts_per_s"]
        out.append({"target": "64 single-text clients: texts/s >= 2x infinity", "value": f"{ratio:.2f}x",
                    "met": ratio >= 2})
    if ours in at64 and unbatched in at64:
        ratio = at64[ours]["texts_per_s"] / at64[unbatched]["texts_per_s"]
        out.append({"target": "64 single-text clients: texts/s >= 4x batching off", "value": f"{ratio:.2f}x",
                    "met": ratio >= 4})
    at8 = loads.get("8 clients x 1 query", {})
    if ours in at8 and "infinity" in at8 and at8[ours]["p99_ms"] and at8["infinity"]["p99_ms"]:
        mine, theirs = at8[ours]["p99_ms"], at8["infinity"]["p99_ms"]
        out.append({"target": "8 clients: p99 <= infinity's", "value": f"{mine:.1f} ms vs {theirs:.1f} ms",
                    "met": mine <= theirs})
    seq = next((s for s in results.get("sequential", []) if s["server"] == ours), None)
    if seq is not None:
        out.append({"target": "one sequential client: <= 2 ms over Encoder.encode",
                    "value": f"{seq['overhead_ms']:+.2f} ms median ({seq['http_ms']:.2f} vs "
                             f"{seq['encode_ms']:.2f} ms); {seq['overhead_p10_ms']:+.2f} ms at the 10th percentile",
                    "met": seq["overhead_ms"] <= 2})
    return out


def table(results: dict) -> str:
    lines = [f"CPU: {results['cpu']}. {results['seconds']:g} s per setting x {results['rounds']} round(s), systems "
             f"in rotating order; load average {results['loadavg_before'][0]:.1f} before, "
             f"{results['loadavg_after'][0]:.1f} after.", "",
             "| load | system | texts/s | x infinity | x no batching | p50 ms | p99 ms | CPU s / 1k texts | errors "
             "| cut |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    first = results["variants"][0]
    for load_name, systems in results["loads"].items():
        base = systems.get("infinity", {}).get("texts_per_s")
        unbatched = systems.get(f"embedrank {first}, no batching", {}).get("texts_per_s")
        for name, r in systems.items():
            ratio = f"{r['texts_per_s'] / base:.2f}" if base else ""
            own = (f"{r['texts_per_s'] / unbatched:.2f}" if unbatched and name.startswith("embedrank")
                   and "no batching" not in name else "")
            errors = sum(r["errors"].values())
            lines.append(f"| {load_name} | {name} | {r['texts_per_s']:.1f} | {ratio} | {own} | {_f(r['p50_ms'])} | "
                         f"{_f(r['p99_ms'])} | {_f(r['cpu_s_per_1000_texts'], 2)} | {errors} | {r['cut']} |")
    if results.get("sequential"):
        lines += ["", "One sequential client, one query per request, calls alternating with Encoder.encode in "
                  "process (median; 10th percentile, the least disturbed calls, in brackets):", "",
                  "| server | Encoder.encode in process ms | over HTTP ms | overhead ms |", "|---|---|---|---|"]
        for s in results["sequential"]:
            lines.append(f"| {s['server']} | {s['encode_ms']:.2f} ({s['encode_p10_ms']:.2f}) | {s['http_ms']:.2f} "
                         f"({s['http_p10_ms']:.2f}) | {s['overhead_ms']:+.2f} ({s['overhead_p10_ms']:+.2f}) |")
        lines += ["", "The same calls as means, and inside the server (from its /metrics): waiting for the model "
                  "thread, the model call (tokenizing for usage included), the whole endpoint (HTTP parsing and "
                  "sending excluded):", "",
                  "| server | encode in process ms | over HTTP ms | server: queue wait ms | model call ms "
                  "| endpoint ms |",
                  "|---|---|---|---|---|---|"]
        for s in results["sequential"]:
            lines.append(f"| {s['server']} | {s['encode_mean_ms']:.2f} | {s['http_mean_ms']:.2f} | "
                         f"{s['server_queue_mean_ms']:.2f} | {s['server_inference_mean_ms']:.2f} | "
                         f"{s['server_endpoint_mean_ms']:.2f} |")
    if results.get("in_process"):
        lines += ["", "Encoder.encode in process, no server (the model's own ceiling for these queries):", "",
                  "| variant | 1 query per call, texts/s | 64 per call, texts/s | gain |", "|---|---|---|---|"]
        for m in results["in_process"]:
            lines.append(f"| {m['variant']} | {m['batch_1_texts_per_s']:.1f} | {m['batch_64_texts_per_s']:.1f} | "
                         f"{m['batch_64_texts_per_s'] / m['batch_1_texts_per_s']:.2f}x |")
    if results.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        for t in results["targets"]:
            lines.append(f"| {t['target']} | {t['value']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa)}"


# -- the run ---------------------------------------------------------------------------------
async def main_async(args) -> dict:
    from embedrank.data.beir import load_beir
    from embedrank.utils.documents import document_text

    corpus, queries, _ = load_beir(args.data, split="test")
    queries = list(queries.values())
    docs = [document_text(d) for d in corpus.values()]
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="bench_serve_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    log(f"server logs in {log_dir}")
    servers: list[Server] = []

    def embedrank_server(name: str, variant: str, *extra: str) -> Server:
        port = free_port()
        # the same interpreter and environment (PYTHONPATH included) as this script
        return Server(name, [sys.executable, "-m", "embedrank.apps.cli", "serve", "--model", args.model, "--variant",
                             variant, "--port", str(port), "--max-concurrent-requests", "4096",
                             "--graceful-timeout", "5", *extra],
                      port, "/v1/embeddings", "/v1/models", log_dir)

    results: dict = {"loads": {}, "cpu": cpu_name(), "seconds": args.seconds, "rounds": args.rounds,
                     "grace_s": args.grace, "variants": args.variants, "loadavg_before": os.getloadavg(),
                     "phases": []}
    try:
        for variant in args.variants:
            servers.append(embedrank_server(f"embedrank {variant}", variant))
        servers.append(embedrank_server(f"embedrank {args.variants[0]}, no batching", args.variants[0],
                                        "--max-batch-requests", "1"))
        if args.infinity_venv:
            port = free_port()
            servers.append(Server("infinity", [str(Path(args.infinity_venv) / "bin" / "infinity_emb"), "v2",
                                               "--model-id", args.hf, "--device", "cpu", "--host", "127.0.0.1",
                                               "--port", str(port)],
                                  port, "/embeddings", "/models", log_dir,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                                       "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"}))
        log(f"starting {', '.join(s.name for s in servers)}")
        for server in servers:
            await server.wait_ready(args.startup_timeout)
            log(f"{server.name} ready (model {server.model!r}, port {server.port})")
        loads = [(f"{c} clients x 1 query", c, [[q] for q in queries]) for c in args.clients]
        if args.batch_clients:
            loads.append((f"{args.batch_clients} clients x 32 documents", args.batch_clients,
                          [docs[i:i + 32] for i in range(0, len(docs) - 31, 32)]))
        for turn, (name, clients, payloads) in enumerate(loads):
            phases: dict[str, list[dict]] = {s.name: [] for s in servers}
            for r in range(args.rounds):
                shift = (turn + r) % len(servers)
                for server in servers[shift:] + servers[:shift]:
                    if server.process.poll() is not None:
                        raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n"
                                           f"{server.log_tail()}")
                    bodies = [(server.body(p), len(p)) for p in payloads]
                    await warm(server, clients, bodies, args.grace)
                    phase = await load(server, clients, bodies, args.seconds, args.grace)
                    phases[server.name].append(phase)
                    s = summarize([phase])
                    results["phases"].append({"load": name, "system": server.name, "round": r,
                                              **{k: v for k, v in s.items()}})
                    log(f"{name} | {server.name} | round {r + 1}: {s['texts_per_s']:.1f} texts/s, "
                        f"p50 {_f(s['p50_ms'])} ms, p99 {_f(s['p99_ms'])} ms, "
                        f"CPU {_f(s['cpu_s_per_1000_texts'], 2)} s/1k texts, {phase['wall_s']:.1f} s, "
                        f"errors {phase['errors'] or 0}, cut {phase['cut']}"
                        + (f" (first: {phase['first_error']})" if phase["first_error"] else ""))
            results["loads"][name] = {s.name: summarize(phases[s.name]) for s in servers}
        results["sequential"] = []
        for server in servers:
            if server.name.startswith("embedrank"):
                variant = server.name.split()[1].rstrip(",")
                seq = await sequential_overhead(args.model, variant, server, queries, args.sequential_calls)
                results["sequential"].append(seq)
                log(f"sequential | {server.name}: encode {seq['encode_ms']:.2f} ms, HTTP {seq['http_ms']:.2f} ms, "
                    f"{seq['overhead_ms']:+.2f} ms; in the server (means): queue {seq['server_queue_mean_ms']:.2f} ms, "
                    f"model call {seq['server_inference_mean_ms']:.2f} ms, "
                    f"endpoint {seq['server_endpoint_mean_ms']:.2f} ms")
    finally:
        stop_all(servers)
        log("servers stopped")
    results["in_process"] = []
    for variant in args.variants:
        results["in_process"].append(in_process(args.model, variant, queries, min(args.seconds, 5.0)))
        log(f"in process | {variant}: {results['in_process'][-1]}")
    results["loadavg_after"] = os.getloadavg()
    results["targets"] = targets(results)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="embedrank model folder")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["fp32", "int8"],
                        help="embedrank variants to serve (the first also runs without batching)")
    parser.add_argument("--hf", help="the same model's Hugging Face folder (for infinity)")
    parser.add_argument("--infinity-venv", help="a venv with infinity-emb[server,torch] installed")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--seconds", type=float, default=10.0, help="load per system, load and round")
    parser.add_argument("--rounds", type=int, default=1, help="turns each system takes at each load")
    parser.add_argument("--grace", type=float, default=60.0,
                        help="seconds the requests still out at a phase's end get before they are cut")
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=list(CLIENTS))
    parser.add_argument("--batch-clients", type=int, default=8, help="clients sending 32 documents (0: none)")
    parser.add_argument("--sequential-calls", type=int, default=200)
    parser.add_argument("--log-dir", help="where the servers' logs go (default: a new temporary folder)")
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 1 s per setting, 1 and 8 clients, 1 batch client, 20 sequential calls")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serve.json"))
    parser.add_argument("--markdown", default=str(REPO / "benchmarks" / "results" / "serve.md"))
    args = parser.parse_args(argv)
    if args.hf is None and args.infinity_venv:
        parser.error("--infinity-venv needs --hf (the Hugging Face folder infinity loads)")
    if args.quick:
        args.seconds, args.clients, args.batch_clients, args.sequential_calls = 1.0, [1, 8], 1, 20
        args.grace = min(args.grace, 30.0)
    results = asyncio.run(main_async(args))
    text = table(results)
    print(text, flush=True)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.markdown).write_text("# embedrank serve vs infinity\n\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
