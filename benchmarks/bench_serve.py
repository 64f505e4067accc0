"""Load test of `embedrank serve` against infinity, side by side on this machine.

    python benchmarks/bench_serve.py --model MODEL_DIR --hf HF_DIR [--infinity-venv VENV] [--quick]

Starts the servers on loopback ports, each idle while another takes the load: embedrank per
variant (cross-request batching on; fp32 is infinity's precision), the first variant with
batching off (--max-batch-requests 1: one model call per request) and, when --infinity-venv is
given, infinity (`infinity_emb v2 --model-id
HF_DIR --device cpu`, its own venv since it needs numpy<2). For each load — 1, 8, 64 and 256
concurrent clients sending one short SciFact query per request, then clients sending batches
of 32 SciFact documents — every system takes the load in turn (order rotating) for
--seconds, through the same OpenAI-shaped /embeddings endpoint and the same asyncio client.
Reports texts/s, p50/p99 request latency and CPU seconds per 1,000 texts (the server
process's user+system time), plus the sequential-client overhead over Encoder.encode in
process. Writes --output (JSON) and --markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CLIENTS = (1, 8, 64, 256)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """user + system CPU seconds of a process and its reaped children (from /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, name: str, command: list[str], port: int, path: str, env: dict | None = None):
        self.name, self.port, self.path = name, port, path
        self.url = f"http://127.0.0.1:{port}{path}"
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True, env=env or dict(os.environ))

    async def wait_ready(self, client, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}")
            try:
                response = await client.post(self.url, json={"input": ["ready?"], "model": "m"}, timeout=30)
                if response.status_code == 200:
                    return
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            await asyncio.sleep(0.5)
        raise RuntimeError(f"{self.name} did not answer in {timeout} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


async def load(server: Server, client, clients: int, payloads: list[list[str]], seconds: float, model: str) -> dict:
    """`clients` concurrent loops posting payloads for `seconds`; latencies and texts done."""
    latencies: list[float] = []
    texts = errors = 0
    stop_at = time.perf_counter() + seconds
    cpu_before = cpu_seconds(server.process.pid)

    async def loop(i: int) -> None:
        nonlocal texts, errors
        k = i
        while time.perf_counter() < stop_at:
            payload = payloads[k % len(payloads)]
            k += clients
            started = time.perf_counter()
            response = await client.post(server.url, json={"input": payload, "model": model}, timeout=300)
            if response.status_code != 200:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            texts += len(payload)

    started = time.perf_counter()
    await asyncio.gather(*(loop(i) for i in range(clients)))
    wall = time.perf_counter() - started
    cpu = cpu_seconds(server.process.pid) - cpu_before
    ms = np.array(latencies) * 1e3
    return {"texts_per_s": texts / wall, "requests": len(latencies), "errors": errors,
            "p50_ms": float(np.percentile(ms, 50)) if ms.size else None,
            "p99_ms": float(np.percentile(ms, 99)) if ms.size else None,
            "cpu_s_per_1000_texts": 1000 * cpu / texts if texts else None}


def sequential_overhead(model_dir: str, variant: str, server: Server, client_sync, queries: list[str], n: int) -> dict:
    """Median latency of one query per call: Encoder.encode in process vs one HTTP client."""
    import embedrank

    encoder = embedrank.Encoder.load(model_dir, variant=variant)
    local, remote = [], []
    for q in queries[:n]:
        started = time.perf_counter()
        encoder.encode([q])
        local.append(time.perf_counter() - started)
        started = time.perf_counter()
        client_sync.post(server.url, json={"input": [q], "model": "m"}, timeout=60).raise_for_status()
        remote.append(time.perf_counter() - started)
    return {"encode_ms": statistics.median(local) * 1e3, "http_ms": statistics.median(remote) * 1e3,
            "overhead_ms": (statistics.median(remote) - statistics.median(local)) * 1e3}


def table(results: dict) -> str:
    lines = [f"CPU: {results['cpu']}; {results['seconds']:.0f} s per setting, systems in rotating order.", "",
             "| load | system | texts/s | x infinity | x no batching | p50 ms | p99 ms | CPU s / 1k texts |",
             "|---|---|---|---|---|---|---|---|"]
    for load_name, systems in results["loads"].items():
        base = systems.get("infinity", {}).get("texts_per_s")
        unbatched = next((r["texts_per_s"] for n, r in systems.items() if n.endswith("no batching")), None)
        for name, r in systems.items():
            ratio = f"{r['texts_per_s'] / base:.2f}" if base else ""
            own = f"{r['texts_per_s'] / unbatched:.2f}" if unbatched and name.startswith("embedrank") else ""
            lines.append(f"| {load_name} | {name} | {r['texts_per_s']:.1f} | {ratio} | {own} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['cpu_s_per_1000_texts']:.2f} |")
    seq = results["sequential"]
    lines.append("")
    lines.append(f"One sequential client, one query per request: Encoder.encode in process {seq['encode_ms']:.2f} ms, "
                 f"over HTTP {seq['http_ms']:.2f} ms (+{seq['overhead_ms']:.2f} ms).")
    return "\n".join(lines)


def cpu_name() -> str:
    info = Path("/proc/cpuinfo").read_text()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_int8") if f in flags]
    return f"{name}, {os.cpu_count()} cores, {' '.join(isa)}"


async def main_async(args) -> dict:
    import httpx

    from embedrank.data.beir import load_beir
    from embedrank.utils.documents import document_text

    corpus, queries, _ = load_beir(args.data, split="test")
    queries = list(queries.values())
    docs = [document_text(d) for d in corpus.values()]
    servers = []

    def embedrank_server(name: str, variant: str, *extra: str) -> Server:
        port = free_port()
        return Server(name, [sys.executable, "-m", "embedrank.apps.cli", "serve", "--model", args.model, "--variant",
                             variant, "--port", str(port), "--max-concurrent-requests", "4096", *extra],
                      port, "/v1/embeddings")

    for variant in args.variants:
        servers.append(embedrank_server(f"embedrank {variant}", variant))
    servers.append(embedrank_server(f"embedrank {args.variants[0]}, no batching", args.variants[0],
                                    "--max-batch-requests", "1"))
    if args.infinity_venv:
        port = free_port()
        servers.append(Server("infinity", [str(Path(args.infinity_venv) / "bin" / "infinity_emb"), "v2", "--model-id",
                                           args.hf, "--device", "cpu", "--host", "127.0.0.1", "--port", str(port)],
                              port, "/embeddings", env={**os.environ, "HF_HUB_OFFLINE": "1",
                                                        "INFINITY_ANONYMOUS_USAGE_STATS": "0"}))
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    results: dict = {"loads": {}, "cpu": cpu_name(), "seconds": args.seconds}
    try:
        async with httpx.AsyncClient(limits=limits) as client:
            for server in servers:
                await server.wait_ready(client)
            loads = [(f"{c} clients x 1 query", c, [[q] for q in queries]) for c in args.clients]
            loads.append((f"{args.batch_clients} clients x 32 documents", args.batch_clients,
                          [docs[i:i + 32] for i in range(0, len(docs), 32)]))
            for turn, (name, clients, payloads) in enumerate(loads):
                results["loads"][name] = {}
                order = servers[turn % len(servers):] + servers[:turn % len(servers)]
                for server in order:
                    await load(server, client, clients, payloads[:50], 1.0, "m")  # warm
                    results["loads"][name][server.name] = await load(server, client, clients, payloads, args.seconds, "m")
                    print(name, server.name, json.dumps(results["loads"][name][server.name]), flush=True)
                results["loads"][name] = {s.name: results["loads"][name][s.name] for s in servers}
        with httpx.Client() as sync_client:
            results["sequential"] = sequential_overhead(args.model, args.variants[0], servers[0], sync_client, queries, 100)
    finally:
        for server in servers:
            server.stop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="embedrank model folder")
    parser.add_argument("--variants", type=lambda s: s.split(","), default=["fp32", "int8"],
                        help="embedrank variants to serve (the first also runs without batching)")
    parser.add_argument("--hf", help="the same model's Hugging Face folder (for infinity)")
    parser.add_argument("--infinity-venv", help="a venv with infinity-emb[server,torch] installed")
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "scifact"))
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=lambda s: [int(x) for x in s.split(",")], default=list(CLIENTS))
    parser.add_argument("--batch-clients", type=int, default=8)
    parser.add_argument("--quick", action="store_true", help="3 s per setting")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "serve.json"))
    parser.add_argument("--markdown", default=str(REPO / "benchmarks" / "results" / "serve.md"))
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    results = asyncio.run(main_async(args))
    text = table(results)
    print(text)
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    Path(args.markdown).write_text("# embedrank serve vs infinity\n\n" + text + "\n")


if __name__ == "__main__":
    main()
