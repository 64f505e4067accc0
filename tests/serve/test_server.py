"""`embedrank serve` as a client sees it: a real server process, real HTTP, the openai client."""

from __future__ import annotations

import concurrent.futures
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import embedrank
from tests.serve.conftest import Server, request

TEXTS = ["A man is eating food.", "", "Vitamin D deficiency and the risk of infection",
         " ".join(["a long text that goes past the model's maximum sequence length"] * 60),
         "Ünïcödé façade: naïve café, Tōkyō 東京"]


@pytest.fixture(scope="module")
def encoder(serve_models):
    return embedrank.Encoder.load(serve_models[0])


# -- embeddings ------------------------------------------------------------------------------
def test_openai_embeddings_equal_encode(server, encoder):
    status, _, body = request(server.url + "/v1/embeddings", {"input": TEXTS, "model": "all-MiniLM-L6-v2"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "all-MiniLM-L6-v2"
    got = np.array([d["embedding"] for d in sorted(body["data"], key=lambda d: d["index"])], dtype=np.float32)
    with pytest.warns(embedrank.TruncationWarning):
        expected = encoder.encode(TEXTS)
    assert np.abs(got - expected).max() <= 1e-5
    usage = body["usage"]
    assert usage["prompt_tokens"] == usage["total_tokens"] > 0
    # the long text counts max_seq_length tokens, the empty one its two special tokens
    assert usage["prompt_tokens"] <= encoder.max_seq_length * len(TEXTS)


def test_the_openai_client_works_unchanged(server, encoder):
    openai = pytest.importorskip("openai", reason="needs the openai client (pip install openai)")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    result = client.embeddings.create(model="all-MiniLM-L6-v2", input=TEXTS[:3])  # base64 on the wire
    got = np.array([d.embedding for d in result.data], dtype=np.float32)
    assert np.abs(got - encoder.encode(TEXTS[:3])).max() <= 1e-5
    floats = client.embeddings.create(model="all-MiniLM-L6-v2", input="one text", encoding_format="float",
                                      dimensions=128)
    assert len(floats.data[0].embedding) == 128
    assert np.abs(np.array(floats.data[0].embedding) - encoder.encode(["one text"], truncate_dim=128)[0]).max() <= 1e-5
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.embeddings.create(model="text-embedding-3-small", input="x")


def test_tei_embed_options_equal_encode(server, encoder):
    status, _, body = request(server.url + "/embed", {"inputs": TEXTS[:3], "normalize": False})
    assert status == 200, body
    assert np.abs(np.array(body, dtype=np.float32) - encoder.encode(TEXTS[:3], normalize=False)).max() <= 1e-5
    status, _, body = request(server.url + "/embed", {"inputs": "one text", "dimensions": 64})
    assert status == 200 and np.abs(np.array(body) - encoder.encode(["one text"], truncate_dim=64)).max() <= 1e-5
    for dtype in ("int8", "ubinary"):
        status, _, body = request(server.url + "/embed", {"inputs": TEXTS[:3], "embedding_dtype": dtype})
        assert status == 200, body
        assert np.array_equal(np.array(body), encoder.encode(TEXTS[:3], precision=dtype)), dtype
    status, _, body = request(server.url + "/embed", {"inputs": [TEXTS[3]], "truncate": False})
    assert status == 413 and "max_seq_length" in body["error"]["message"]


def test_concurrent_requests_are_batched_and_each_gets_its_own_rows(server, encoder):
    texts = [f"query number {i} about topic {i % 7}" + " more" * (i % 13) for i in range(48)]
    expected = encoder.encode(texts)

    def one(i):
        status, _, body = request(server.url + "/v1/embeddings", {"input": texts[i]})
        return status, np.array(body["data"][0]["embedding"], dtype=np.float32)

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(one, range(len(texts))))
    assert all(status == 200 for status, _ in results)
    assert max(np.abs(v - expected[i]).max() for i, (_, v) in enumerate(results)) <= 1e-5
    _, _, metrics = request(server.url + "/metrics")
    merged = [line for line in metrics.splitlines() if line.startswith('embedrank_batch_requests_sum{model="embed"}')]
    count = [line for line in metrics.splitlines() if line.startswith('embedrank_batch_requests_count{model="embed"}')]
    # more requests than model calls: requests were merged
    assert float(merged[0].split()[-1]) > float(count[0].split()[-1])


# -- rerank and search -----------------------------------------------------------------------
def test_rerank_equals_predict(server, serve_models):
    cross_encoder = embedrank.CrossEncoder.load(serve_models[1])
    query, docs = "vitamin d", ["Vitamin D and infections", "Paris is in France", "sunlight makes vitamin D", ""]
    status, _, body = request(server.url + "/rerank", {"query": query, "texts": docs, "return_text": True})
    assert status == 200, body
    expected = cross_encoder.predict([(query, d) for d in docs])
    assert [h["index"] for h in body] == [int(i) for i in np.lexsort((np.arange(4), -expected))]
    assert max(abs(h["score"] - expected[h["index"]]) for h in body) <= 1e-5
    assert all(h["text"] == docs[h["index"]] for h in body)
    status, _, raw = request(server.url + "/rerank", {"query": query, "texts": docs, "raw_scores": True, "top_n": 2})
    logits = cross_encoder.predict([(query, d) for d in docs], activation=None)
    assert len(raw) == 2 and abs(raw[0]["score"] - logits[raw[0]["index"]]) <= 1e-5


def _search_equals(server, retriever, queries, **options) -> list:
    """/search's results for `options`, checked against Retriever.search with the same ones."""
    status, _, body = request(server.url + "/search", {"queries": queries, "top_k": 5, **options})
    assert status == 200, body
    expected = retriever.search(queries, top_k=5, **options)
    for result, hits in zip(body["results"], expected):
        assert [h["doc_id"] for h in result["hits"]] == [h.doc_id for h in hits]
        if hits:
            assert max(abs(a["score"] - b.score) for a, b in zip(result["hits"], hits)) <= 1e-4
            assert result["hits"][0]["passage"] == hits[0].passage
        assert set(result["timings_ms"]) >= {"encode", "search", "lexical", "rerank", "total", "request"}
    return body["results"]


def test_search_equals_retriever(server, serve_models):
    retriever = embedrank.Retriever.load(serve_models[2])
    queries = ["how are documents indexed", "evaluation of retrieval systems"]
    for rerank, mode in ((False, None), (True, None), (False, "dense"), (False, "lexical"), (True, "hybrid")):
        _search_equals(server, retriever, queries, rerank=rerank, mode=mode)
    status, _, one = request(server.url + "/search", {"query": queries[0]})
    assert status == 200 and len(one["hits"]) == retriever.top_k
    second = [d for i, d in enumerate(retriever.store.doc_ids) if i >= len(retriever.store) // 2]
    for search_filter in ({"half": "second"}, second[:3]):
        for result in _search_equals(server, retriever, queries, rerank=True, filter=search_filter):
            assert result["hits"] and all(h["doc_id"] in second for h in result["hits"])
    assert all(r["hits"] == [] for r in _search_equals(server, retriever, queries, filter={"half": "nobody"}))


# -- service endpoints -----------------------------------------------------------------------
def test_health_models_metrics_and_page(server):
    assert request(server.url + "/health")[0] == 200
    status, _, body = request(server.url + "/v1/models")
    assert status == 200 and {m["kind"] for m in body["data"]} == {"embedding", "rerank"}
    status, head, text = request(server.url + "/metrics")
    assert status == 200 and head["content-type"].startswith("text/plain")
    for name in ("embedrank_queue_depth", "embedrank_batch_tokens", "embedrank_stage_seconds",
                 "embedrank_request_seconds", "embedrank_requests_total"):
        assert name in text, name
    status, _, page = request(server.url + "/")
    assert status == 200 and "<form" in page and "/search" in page


# -- bad requests: 4xx naming the problem, never a 500 -----------------------------------------
@pytest.mark.parametrize("path, body, status, needle", [
    ("/v1/embeddings", b"{not json", 400, "not valid JSON"),
    ("/v1/embeddings", b"[1, 2]", 422, "JSON object"),
    ("/v1/embeddings", {"input": []}, 422, "empty"),
    ("/v1/embeddings", {"input": 42}, 422, "string or a list"),
    ("/v1/embeddings", {"input": ["ok", None]}, 422, "input[1]"),
    ("/v1/embeddings", {"input": "x", "model": "nope"}, 404, "not served"),
    ("/v1/embeddings", {"input": "x", "dimensions": 0}, 422, "dimensions"),
    ("/v1/embeddings", {"input": "x", "encoding_format": "hex"}, 422, "encoding_format"),
    ("/v1/embeddings", {"input": ["x"] * 65}, 422, "max-client-batch-size"),
    ("/v1/embeddings", {"input": "x" * 300_000}, 413, "payload limit"),
    ("/embed", {"inputs": "x", "embedding_dtype": "float64"}, 422, "embedding_dtype"),
    ("/embed", {"inputs": "x", "normalize": "yes"}, 422, "normalize"),
    ("/embed", {"inputs": "x", "prompt_name": "no-such-prompt"}, 422, "prompt_name"),
    ("/rerank", {"query": "", "texts": ["a"]}, 422, "query"),
    ("/rerank", {"query": "q", "texts": ["a"], "top_n": -1}, 422, "top_n"),
    ("/search", {"query": "a", "queries": ["b"]}, 422, "exactly one"),
    ("/search", {"query": "a", "top_k": "ten"}, 422, "top_k"),
    ("/search", {"query": "a", "filter": "en"}, 422, "filter"),
    ("/search", {"query": "a", "filter": [1, 2]}, 422, "document ids"),
    ("/search", {"query": "a", "filter": {"half": {"$ne": "first"}}}, 422, "half"),
    ("/search", {"query": "a", "filter": {"half": [["nested"]]}}, 422, "half"),
    ("/search", {"query": "a", "filter": {"half": "\ud800"}}, 422, "not valid Unicode"),
    ("/search", {"query": "a", "filter": {"half": float("nan")}}, 422, "NaN"),
    ("/search", b'{"query": "a", "mode": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    ("/search", {"query": "a", "mode": "sparse"}, 422, "mode"),
])
def test_bad_requests_get_a_clear_4xx(server, path, body, status, needle):
    got, _, answer = request(server.url + path, body)
    assert got == status, answer
    assert needle in answer["error"]["message"], answer
    if isinstance(body, dict) and "filter" in body:
        assert answer["error"]["param"] == "filter", answer


def test_unknown_path_and_method(server):
    assert request(server.url + "/nope")[0] == 404
    assert request(server.url + "/v1/embeddings", method="GET")[0] == 405


# -- auth, backpressure, shutdown, departed clients ----------------------------------------------
def test_api_key(serve_models, tmp_path):
    server = Server(["--model", str(serve_models[0]), "--api-key", "s3cret"], tmp_path / "log")
    try:
        assert request(server.url + "/health")[0] == 200  # open for load balancers
        status, _, body = request(server.url + "/v1/embeddings", {"input": "x"})
        assert status == 401 and "API key" in body["error"]["message"]
        assert request(server.url + "/v1/embeddings", {"input": "x"}, {"Authorization": "Bearer wrong"})[0] == 401
        assert request(server.url + "/v1/embeddings", {"input": "x"}, {"Authorization": "Bearer s3cret"})[0] == 200
        assert request(server.url + "/metrics", headers={"Authorization": "Bearer s3cret"})[0] == 200
        assert request(server.url + "/metrics")[0] == 401
    finally:
        assert server.stop() == 0


def test_burst_beyond_the_limit_gets_429_with_retry_after(serve_models, tmp_path):
    server = Server(["--model", str(serve_models[0]), "--max-concurrent-requests", "2"], tmp_path / "log")
    long_texts = [" ".join(["many words in a long document"] * 40)] * 16
    try:
        with concurrent.futures.ThreadPoolExecutor(24) as pool:
            results = list(pool.map(lambda _: request(server.url + "/v1/embeddings", {"input": long_texts}),
                                    range(24)))
        statuses = [status for status, _, _ in results]
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses, statuses
        rejected = next(r for r in results if r[0] == 429)
        assert rejected[1]["retry-after"] == "1" and "max-concurrent-requests" in rejected[2]["error"]["message"]
    finally:
        assert server.stop() == 0


def test_sigterm_answers_every_request_in_flight(serve_models, tmp_path):
    server = Server(["--model", str(serve_models[0]), "--graceful-timeout", "300"], tmp_path / "log")
    texts = [" ".join(["a document to embed before the server stops"] * 10)] * 8
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(request, server.url + "/v1/embeddings", {"input": texts}) for _ in range(8)]
        time.sleep(0.5)  # the requests are in
        server.process.send_signal(signal.SIGTERM)
        statuses = [f.result()[0] for f in futures]
    assert statuses == [200] * 8
    assert server.process.wait(60) == 0


def test_a_client_killed_mid_request_leaves_the_server_healthy(serve_models, tmp_path):
    server = Server(["--model", str(serve_models[0])], tmp_path / "log")
    client = (f"import json, urllib.request\n"
              f"body = json.dumps({{'input': [' '.join(['long'] * 300)] * 64}}).encode()\n"
              f"urllib.request.urlopen(urllib.request.Request('{server.url}/v1/embeddings', data=body, "
              f"headers={{'Content-Type': 'application/json'}}), timeout=60)\n")
    try:
        procs = [subprocess.Popen([sys.executable, "-c", client]) for _ in range(3)]
        time.sleep(0.7)
        for p in procs:
            p.kill()
            p.wait()
        status, _, body = request(server.url + "/v1/embeddings", {"input": "still here"})
        assert status == 200 and len(body["data"]) == 1
        assert request(server.url + "/health")[0] == 200
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # nothing is left queued for the departed clients
            _, _, metrics = request(server.url + "/metrics")
            depth = [line for line in metrics.splitlines() if line.startswith('embedrank_queue_depth{model="embed"}')]
            if float(depth[0].split()[-1]) == 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the departed clients' work stayed queued")
    finally:
        assert server.stop() == 0


def test_health_fails_when_the_model_is_broken(serve_models, tmp_path):
    # a server whose model cannot run answers 503 on /health instead of claiming to be up
    from embedrank.serve.app import Service, create_app
    from embedrank.serve.settings import ServeSettings

    settings = ServeSettings(model=str(serve_models[0]))
    service = Service(settings)

    def broken(*args, **kwargs):
        raise RuntimeError("the session is gone")

    service.encoder.encode = broken
    app = create_app(settings, service=service).app
    from starlette.testclient import TestClient

    with pytest.raises(RuntimeError):  # the warm-up at start-up already fails
        with TestClient(app):
            pass
    service.stop()
    service = Service(settings)
    with TestClient(create_app(settings, service=service).app) as client:
        assert client.get("/health").status_code == 200
        service.encoder.encode = broken
        response = client.get("/health")
        assert response.status_code == 503 and "the session is gone" in response.json()["error"]


@pytest.mark.parametrize("module", ["orjson", "uvicorn"])
def test_serve_without_the_extra_names_what_is_missing(monkeypatch, module):
    from embedrank.serve import serve

    monkeypatch.setitem(sys.modules, module, None)  # an import of it now raises ImportError
    with pytest.raises(embedrank.errors.MissingDependencyError, match=rf"{module}.*embedrank\[serve\]"):
        serve(model="unused")
