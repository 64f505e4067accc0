"""The HNSW index benchmark (python -m embedrank.bench.index): see embedrank/bench/index.py."""

from embedrank.bench.index import main

if __name__ == "__main__":
    main()
