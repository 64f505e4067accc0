"""The reranker benchmark (python -m embedrank.bench.reranker): see embedrank/bench/reranker.py."""

from embedrank.bench.reranker import main

if __name__ == "__main__":
    main()
