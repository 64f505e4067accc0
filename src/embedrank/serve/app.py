"""The HTTP service: embeddings (OpenAI and TEI shapes), rerank, search, health, metrics, a page.

Starlette routes served by uvicorn. Each model runs on its own worker thread behind a
:class:`~embedrank.serve.batching.Batcher`, so concurrent requests share model calls; a
light ASGI gate in front of every route answers 401 (missing or wrong key), 429 (too many
requests in flight, with Retry-After) and 413 (body over the payload limit) before any work
is queued. Errors are JSON ``{"error": {"message", "type", "param"}}`` (the shape the OpenAI
client reads), never a 500 for a bad request.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import threading
import time
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from embedrank.errors import EmbedrankError
from embedrank.index.metadata import compile_filter
from embedrank.models.cross_encoder import CrossEncoder
from embedrank.models.encoder import Encoder, quantize_embeddings
from embedrank.serve.metrics import Metrics
from embedrank.serve.page import PAGE
from embedrank.serve.batching import Batcher, ClientGone, QueueFullError, estimate_tokens
from embedrank.serve.settings import ServeSettings

__all__ = ["Service", "create_app"]

EMBEDDING_DTYPES = ("float32", "int8", "uint8", "binary", "ubinary")
HEALTH_TIMEOUT_S = 30.0


class RequestError(Exception):
    """A request the service refuses: HTTP `status`, a message naming the problem, the field."""

    def __init__(self, status: int, message: str, param: str | None = None, kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind


# -- the models ------------------------------------------------------------------------------
class Service:
    """The loaded models, their batchers and metrics (one per server process)."""

    def __init__(self, settings: ServeSettings):
        self.settings = settings
        self.retriever = None
        if settings.retriever is not None:
            from embedrank.retrieval.retriever import Retriever

            self.retriever = Retriever.load(settings.retriever, num_threads=settings.num_threads)
        if settings.model is not None:
            self.encoder = Encoder.load(settings.model, variant=settings.variant, num_threads=settings.num_threads)
        else:
            self.encoder = self.retriever.encoder
        if settings.reranker is not None:
            self.reranker = CrossEncoder.load(settings.reranker, num_threads=settings.num_threads)
        else:
            self.reranker = self.retriever.reranker if self.retriever is not None else None
        self.model_name = settings.model_name or Path(self.encoder.config.path).name
        self.reranker_name = Path(self.reranker.config.path).name if self.reranker is not None else None
        self.metrics = Metrics()
        # One lock per model object: a model shared by two batchers (the retriever's encoder
        # and /v1/embeddings) still runs one call at a time.
        self._locks: dict[int, threading.Lock] = {}
        common = {"max_batch_tokens": settings.max_batch_tokens, "max_batch_requests": settings.max_batch_requests,
                  "max_queue": settings.max_concurrent_requests}
        self.embedder = Batcher("embed", self._embed, observe=self.metrics.observer("embed"), **common)
        self.scorer = (Batcher("rerank", self._score, observe=self.metrics.observer("rerank"), **common)
                       if self.reranker is not None else None)
        self.searcher = (Batcher("search", self._search, observe=self.metrics.observer("search"), **common)
                         if self.retriever is not None else None)
        self.metrics.watch_queues([b for b in (self.embedder, self.scorer, self.searcher) if b is not None])

    def _lock(self, model) -> threading.Lock:
        return self._locks.setdefault(id(model), threading.Lock())

    # each runs on its batcher's thread ------------------------------------------------------
    def _embed(self, texts: list[str], settings: tuple):
        normalize, dimensions, prompt = settings
        tokenizer = self.encoder.tokenizer
        specials = tokenizer.tokenizer.num_special_tokens_to_add(False)
        with self._lock(self.encoder):
            # for usage and truncate=false: Encoder.encode does not return its token counts, and
            # tokenizing again costs about 1% of the model call. Exact up to max_seq_length; a
            # longer text counts more than fit (long texts are cut before tokenizing)
            counts = [n + specials for n in tokenizer.token_counts([prompt + t for t in texts] if prompt else texts)]
            vectors = self.encoder.encode(texts, normalize=normalize, truncate_dim=dimensions, prompt=prompt or None,
                                          show_progress=False)
        return vectors, counts

    def _score(self, pairs: list[tuple[str, str]], settings: tuple):
        (raw,) = settings
        with self._lock(self.reranker):
            scores = self.reranker.predict(pairs, activation=None if raw else "sigmoid", show_progress=False)
        return scores, None

    def _search(self, queries: list[str], settings: tuple):
        top_k, rerank, mode, filter_key = settings
        conditions = None if filter_key is None else json.loads(filter_key)
        lock = self._lock(self.retriever.encoder)
        with lock:
            hits = self.retriever.search(queries, top_k=top_k, rerank=rerank, show_progress=False, mode=mode,
                                         filter=conditions)
            timings = self.retriever.last_timings
        per_query = timings.per_query_ms() if timings is not None else {}
        return hits, [per_query] * len(queries)

    def stop(self) -> None:
        for batcher in (self.embedder, self.scorer, self.searcher):
            if batcher is not None:
                batcher.stop(timeout=60)


# -- request parsing -------------------------------------------------------------------------
async def _json_body(request, limit: int):
    body = await request.body()
    if len(body) > limit:
        raise RequestError(413, f"the request body has {len(body)} bytes, more than the payload limit of {limit} "
                                "(--payload-limit)", kind="payload_too_large")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise RequestError(400, f"the request body is not valid JSON: {error}") from None
    except RecursionError:
        raise RequestError(400, "the request body is nested too deeply to parse") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the request body must be a JSON object, got {type(data).__name__}")
    return data


def _texts(value, param: str, limit: int) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise RequestError(422, f"'{param}' must be a string or a list of strings, got {type(value).__name__}", param)
    if not value:
        raise RequestError(422, f"'{param}' is empty: give at least one text", param)
    if len(value) > limit:
        raise RequestError(422, f"'{param}' has {len(value)} texts, more than the limit of {limit} per request "
                                "(--max-client-batch-size)", param)
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise RequestError(422, f"'{param}[{i}]' must be a string, got {type(text).__name__}", param)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise RequestError(422, f"'{param}[{i}]' holds a lone surrogate (not valid Unicode text)", param) from None
    return value


def _optional_int(data: dict, name: str, low: int, high: int | None = None) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise RequestError(422, f"'{name}' must be an integer {bounds}, got {value!r}", name)
    return value


def _filter_key(value) -> str | None:
    """/search's "filter" (an object of metadata conditions or a list of document ids) as the
    canonical JSON text that keys a batch: requests with equal filters share a model call. The
    retriever checks the conditions themselves (a bad one: 422 naming it)."""
    if value is None:
        return None
    if isinstance(value, list):
        if not all(isinstance(d, str) for d in value):
            raise RequestError(422, "'filter' as a list holds document ids, which are strings", "filter")
    elif not isinstance(value, dict):
        raise RequestError(422, "'filter' must be an object of metadata conditions ({\"field\": value or [values]}) "
                                f"or a list of document ids, got {type(value).__name__}", "filter")
    else:
        try:
            compile_filter(value)
        except EmbedrankError as error:
            raise RequestError(422, f"'filter': {error}", "filter") from None
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _bool(data: dict, name: str, default: bool) -> bool:
    value = data.get(name, default)
    if not isinstance(value, bool):
        raise RequestError(422, f"'{name}' must be true or false, got {value!r}", name)
    return value


def _check_model(data: dict, service: Service, names: tuple) -> None:
    model = data.get("model")
    if model is not None and model not in names:
        raise RequestError(404, f"model {model!r} is not served here (served: {', '.join(n for n in names if n)})",
                           "model", kind="model_not_found")


def _prompt(service: Service, name) -> str:
    prompts = service.encoder.config.prompts
    if name is None:  # the model's default prompt, if it has one (as sentence-transformers and TEI do)
        default = service.encoder.config.default_prompt_name
        return (prompts.get(default) or "") if default is not None else ""
    if not isinstance(name, str) or name not in prompts:
        known = ", ".join(sorted(prompts)) or "none"
        raise RequestError(422, f"prompt_name {name!r} is not one of the model's prompts ({known})", "prompt_name")
    return prompts[name] or ""


def _disconnect_watcher(request):
    """A coroutine factory that returns when the client closes the connection (the body is
    read by then, so the next ASGI message is the disconnect)."""

    async def wait():
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    return wait


async def _embed(service: Service, texts: list[str], normalize: bool, dimensions, prompt: str, request=None):
    """(float32 vectors [n, d], token counts [n] before truncation) through the shared batcher."""
    try:
        return await service.embedder.run(texts, (normalize, dimensions, prompt),
                                          disconnected=_disconnect_watcher(request) if request is not None else None)
    except QueueFullError as error:
        raise RequestError(429, f"the server is busy: {error}", kind="rate_limit") from None


def _usage(service: Service, counts) -> int:
    limit = service.encoder.max_seq_length
    return int(sum(min(c, limit) for c in counts))


# -- endpoints -------------------------------------------------------------------------------
async def openai_embeddings(request):
    service: Service = request.app.state.service
    data = await _json_body(request, service.settings.payload_limit)
    _check_model(data, service, (service.model_name,))
    texts = _texts(data.get("input"), "input", service.settings.max_client_batch_size)
    dimensions = _optional_int(data, "dimensions", 1, service.encoder.dim)
    encoding = data.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise RequestError(422, f"encoding_format must be 'float' or 'base64', got {encoding!r}", "encoding_format")
    vectors, counts = await _embed(service, texts, True, dimensions, "", request)
    if encoding == "base64":
        values = [base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii") for v in vectors]
    else:
        values = vectors.tolist()
    tokens = _usage(service, counts)
    return _json({"object": "list", "model": service.model_name,
                  "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)],
                  "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


async def tei_embed(request):
    service: Service = request.app.state.service
    data = await _json_body(request, service.settings.payload_limit)
    texts = _texts(data.get("inputs"), "inputs", service.settings.max_client_batch_size)
    normalize = _bool(data, "normalize", True)
    truncate = _bool(data, "truncate", True)
    dimensions = _optional_int(data, "dimensions", 1, service.encoder.dim)
    prompt = _prompt(service, data.get("prompt_name"))
    dtype = data.get("embedding_dtype", "float32")
    if dtype not in EMBEDDING_DTYPES:
        raise RequestError(422, f"embedding_dtype must be one of {', '.join(EMBEDDING_DTYPES)}, got {dtype!r}",
                           "embedding_dtype")
    vectors, counts = await _embed(service, texts, normalize, dimensions, prompt, request)
    limit = service.encoder.max_seq_length
    if not truncate:
        long = [i for i, c in enumerate(counts) if c > limit]
        if long:
            raise RequestError(413, f"inputs[{long[0]}] has {counts[long[0]]} tokens, more than the model's "
                                    f"max_seq_length of {limit} ({len(long)} text(s) too long; pass truncate=true)",
                               "inputs", kind="payload_too_large")
    if dtype != "float32":
        # per request, after the batch is split: int8 ranges come from this request's vectors,
        # as Encoder.encode(texts, precision=...) would give them
        vectors = quantize_embeddings(vectors, dtype)
    return _json(vectors.tolist())


async def rerank(request):
    service: Service = request.app.state.service
    if service.scorer is None:
        raise RequestError(404, "no reranker is served here (start the server with --reranker)", kind="not_found")
    data = await _json_body(request, service.settings.payload_limit)
    _check_model(data, service, (service.reranker_name,))
    query = data.get("query")
    if not isinstance(query, str) or not query:
        raise RequestError(422, "'query' must be a non-empty string", "query")
    texts = _texts(data.get("texts"), "texts", service.settings.max_client_batch_size)
    top_n = _optional_int(data, "top_n", 1)
    raw = _bool(data, "raw_scores", False)
    return_text = _bool(data, "return_text", False)
    pairs = [(query, t) for t in texts]
    try:
        scores, _ = await service.scorer.run(pairs, (raw,), sum(estimate_tokens(query) + estimate_tokens(t)
                                                                 for t in texts), _disconnect_watcher(request))
    except QueueFullError as error:
        raise RequestError(429, f"the server is busy: {error}", kind="rate_limit") from None
    order = np.lexsort((np.arange(len(texts)), -np.asarray(scores, dtype=np.float64)))
    if top_n is not None:
        order = order[:top_n]
    return _json([{"index": int(i), "score": float(scores[i]), **({"text": texts[i]} if return_text else {})}
                  for i in order])


async def search(request):
    service: Service = request.app.state.service
    if service.searcher is None:
        raise RequestError(404, "no retriever is served here (start the server with --retriever)", kind="not_found")
    data = await _json_body(request, service.settings.payload_limit)
    if ("query" in data) == ("queries" in data):
        raise RequestError(422, "give exactly one of 'query' (a string) or 'queries' (a list of strings)", "query")
    single = "query" in data
    queries = _texts(data["query"] if single else data["queries"], "query" if single else "queries",
                     service.settings.max_client_batch_size)
    top_k = _optional_int(data, "top_k", 1, 1000) or service.retriever.top_k
    rerank_value = data.get("rerank")
    if rerank_value is not None and not isinstance(rerank_value, bool):
        raise RequestError(422, f"'rerank' must be true, false or absent, got {rerank_value!r}", "rerank")
    if rerank_value and service.retriever.reranker is None:
        raise RequestError(422, "rerank=true but this retriever has no reranker", "rerank")
    mode = data.get("mode")
    if mode is not None and mode not in ("dense", "lexical", "hybrid"):
        raise RequestError(422, f"'mode' must be \"dense\", \"lexical\" or \"hybrid\", got {mode!r}", "mode")
    if mode in ("lexical", "hybrid") and service.retriever.lexical is None:
        raise RequestError(422, f"mode={mode!r} needs a retriever built with a lexical index "
                                "(embedrank index --lexical)", "mode")
    filter_key = _filter_key(data.get("filter"))
    started = time.perf_counter()
    try:
        hits, timings = await service.searcher.run(queries, (top_k, rerank_value, mode, filter_key),
                                                   disconnected=_disconnect_watcher(request))
    except QueueFullError as error:
        raise RequestError(429, f"the server is busy: {error}", kind="rate_limit") from None
    total_ms = (time.perf_counter() - started) * 1e3
    results = [{"query": q, "hits": [{"doc_id": h.doc_id, "score": h.score, "passage": h.passage, "text": h.text}
                                     for h in found],
                "timings_ms": {**t, "request": total_ms}} for q, found, t in zip(queries, hits, timings)]
    return _json(results[0] if single else {"results": results})


async def health(request):
    service: Service = request.app.state.service
    try:
        vectors, _ = await asyncio.wait_for(_embed(service, ["health check"], True, None, ""),
                                            HEALTH_TIMEOUT_S)
        if vectors.shape != (1, service.encoder.dim) or not np.isfinite(vectors).all():
            raise RuntimeError(f"the model gave {vectors.shape} or non-finite values")
    except Exception as error:  # noqa: BLE001 - any failure means unhealthy
        return _json({"status": "unhealthy", "error": f"{type(error).__name__}: {error}"}, status=503)
    return _json({"status": "ok"})


async def models(request):
    service: Service = request.app.state.service
    data = [{"id": service.model_name, "object": "model", "owned_by": "embedrank", "kind": "embedding",
             "dimensions": service.encoder.dim}]
    if service.reranker_name:
        data.append({"id": service.reranker_name, "object": "model", "owned_by": "embedrank", "kind": "rerank"})
    return _json({"object": "list", "data": data})


async def metrics(request):
    body, content_type = request.app.state.service.metrics.exposition()
    return Response(body, media_type=content_type)


async def page(request):
    return HTMLResponse(PAGE)


def _json(value, status: int = 200):
    # orjson: the standard library's json.dumps took about 0.2 ms for one 384-float embedding,
    # most of a short query's HTTP overhead (benchmarks/results/serve.md)
    return Response(orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY), status_code=status,
                    media_type="application/json")


def _error(error: RequestError):
    response = _json({"error": {"message": error.message, "type": error.kind, "param": error.param}},
                     status=error.status)
    if error.status == 429:
        response.headers["Retry-After"] = "1"
    return response


# -- the gate: auth, concurrency, payload size -------------------------------------------------
class Gate:
    """ASGI middleware run before any route: API key, requests in flight, declared body size."""

    OPEN_PATHS = ("/health", "/")

    def __init__(self, app, settings: ServeSettings, metrics_ref):
        self.app = app
        self.settings = settings
        self.metrics_ref = metrics_ref
        self.in_flight = 0
        self._key = settings.api_key.encode() if settings.api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        headers = dict(scope["headers"])
        error = None
        if self._key is not None and path not in self.OPEN_PATHS:
            given = headers.get(b"authorization", b"")
            token = given[7:] if given[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self._key):
                error = RequestError(401, "missing or wrong API key (send Authorization: Bearer <key>)",
                                     kind="authentication_error")
        if error is None and self.in_flight >= self.settings.max_concurrent_requests:
            error = RequestError(429, f"{self.in_flight} requests are in flight, the limit is "
                                      f"{self.settings.max_concurrent_requests} (--max-concurrent-requests)",
                                 kind="rate_limit")
        declared = headers.get(b"content-length")
        if error is None and declared is not None and declared.isdigit() and int(declared) > self.settings.payload_limit:
            error = RequestError(413, f"the request body has {int(declared)} bytes, more than the payload limit of "
                                      f"{self.settings.payload_limit} (--payload-limit)", kind="payload_too_large")
        if error is not None:
            metrics = self.metrics_ref()
            if metrics is not None:
                metrics.rejected(error.kind)
            return await _error(error)(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def create_app(settings: ServeSettings, service: Service | None = None):
    """The ASGI application; the models load (and warm up) when it starts unless `service` is given."""
    state = {"service": service}

    @asynccontextmanager
    async def lifespan(app):
        if state["service"] is None:
            state["service"] = await asyncio.get_running_loop().run_in_executor(None, Service, settings)
        app.state.service = state["service"]
        # warm-up: the first model call pays for onnxruntime's first-run setup
        await _embed(app.state.service, ["warm up"], True, None, "")
        yield
        await asyncio.get_running_loop().run_in_executor(None, app.state.service.stop)

    async def guarded(handler, request):
        service = request.app.state.service
        started = time.perf_counter()
        try:
            response = await handler(request)
        except RequestError as error:
            response = _error(error)
            service.metrics.rejected(error.kind)
        except ClientGone:  # nobody to answer; the status is only for the metrics
            response = _json({"error": {"message": "client disconnected", "type": "client_gone"}}, status=499)
        except EmbedrankError as error:  # a value the model refused (a prompt too long, ...)
            response = _error(RequestError(422, str(error)))
            service.metrics.rejected("invalid_request_error")
        service.metrics.request(request.url.path, response.status_code, time.perf_counter() - started)
        return response

    def route(path, handler, methods):
        async def endpoint(request):
            return await guarded(handler, request)
        return Route(path, endpoint, methods=methods)

    routes = [
        route("/v1/embeddings", openai_embeddings, ["POST"]),
        route("/embed", tei_embed, ["POST"]),
        route("/rerank", rerank, ["POST"]),
        route("/search", search, ["POST"]),
        route("/health", health, ["GET"]),
        route("/v1/models", models, ["GET"]),
        route("/metrics", metrics, ["GET"]),
        route("/", page, ["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    return Gate(app, settings, lambda: state["service"].metrics if state["service"] is not None else None)
