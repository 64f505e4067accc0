"""``embedrank serve``: embeddings (OpenAI and TEI shapes), rerank and search over HTTP, with
requests batched across clients. Needs the ``serve`` extra (uvicorn, starlette,
prometheus-client)."""

from __future__ import annotations

import importlib
import signal
import threading

from embedrank.errors import MissingDependencyError

from embedrank.serve.settings import ServeSettings

__all__ = ["SERVE_MODULES", "ServeSettings", "serve"]

# what the serve extra installs and the server imports (httptools and uvloop are optional speed-ups)
SERVE_MODULES = ("uvicorn", "starlette", "prometheus_client", "orjson")


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def serve(settings: ServeSettings | None = None, **options) -> None:
    """Runs the server until SIGTERM or SIGINT: it stops accepting, answers the requests in
    flight, stops the model workers and returns (SIGINT then raises KeyboardInterrupt).
    `options` are ServeSettings fields when `settings` is not given. Raises
    MissingDependencyError, naming the modules, without the serve extra."""
    missing = [name for name in SERVE_MODULES if not _importable(name)]
    if missing:
        raise MissingDependencyError(f"embedrank serve needs {', '.join(missing)}: pip install 'embedrank[serve]'")
    import uvicorn

    from embedrank.serve.app import create_app

    settings = settings if settings is not None else ServeSettings(**options)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host=settings.host, port=settings.port,
                                          log_level="warning",
                                          timeout_graceful_shutdown=settings.graceful_timeout, lifespan="on"))
    if threading.current_thread() is not threading.main_thread():
        server.run()
        return
    # uvicorn re-raises a captured SIGTERM once it has drained, under the handler that was
    # there before it: with this one, a drained server returns and the process exits 0.
    previous = signal.signal(signal.SIGTERM, _drained)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)


def _drained(signum, frame) -> None:
    """SIGTERM after uvicorn's graceful shutdown: nothing left to do."""
