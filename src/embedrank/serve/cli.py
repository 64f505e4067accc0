"""The ``embedrank serve`` subcommand (registered by embedrank.apps.cli)."""

from __future__ import annotations

import argparse

from embedrank.apps import arguments

__all__ = ["register"]


def register(commands, common: argparse.ArgumentParser) -> None:
    parser = commands.add_parser("serve", parents=[common], help="serve embeddings, rerank and search over HTTP",
                                 description="An HTTP service with cross-request batching: POST /v1/embeddings "
                                             "(OpenAI), /embed (TEI), /rerank, /search; GET /health, /metrics, "
                                             "/v1/models and a search page at /.")
    parser.add_argument("--model", help="embedrank model folder (bi-encoder); optional with --retriever")
    parser.add_argument("--variant", default="fp32", help="model variant (fp32, opt, int8, ...)")
    parser.add_argument("--reranker", help="embedrank cross-encoder folder for /rerank")
    parser.add_argument("--retriever", help="saved Retriever folder for /search and the search page")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    parser.add_argument("--port", type=arguments.non_negative_int, default=8080)
    parser.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on every endpoint but /health")
    parser.add_argument("--max-batch-tokens", type=arguments.positive_int, default=16384)
    parser.add_argument("--max-batch-requests", type=arguments.positive_int, default=256)
    parser.add_argument("--max-concurrent-requests", type=arguments.positive_int, default=512)
    parser.add_argument("--max-client-batch-size", type=arguments.positive_int, default=256)
    parser.add_argument("--payload-limit", type=arguments.positive_int, default=2_000_000, help="bytes per request")
    parser.add_argument("--graceful-timeout", type=arguments.positive_int, default=60,
                        help="seconds SIGTERM waits for the requests in flight")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from embedrank.serve import ServeSettings, serve

    serve(ServeSettings(model=args.model, variant=args.variant, reranker=args.reranker, retriever=args.retriever,
                        host=args.host, port=args.port, api_key=args.api_key, max_batch_tokens=args.max_batch_tokens,
                        max_batch_requests=args.max_batch_requests,
                        max_concurrent_requests=args.max_concurrent_requests,
                        max_client_batch_size=args.max_client_batch_size, payload_limit=args.payload_limit,
                        num_threads=args.threads, graceful_timeout=args.graceful_timeout))
    return 0
