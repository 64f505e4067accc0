"""End-to-end latency per query on SciFact (python -m embedrank.bench.end_to_end): see embedrank/bench/end_to_end.py."""

from embedrank.bench.end_to_end import main

if __name__ == "__main__":
    main()
