"""The compression sweep on SciFact (python -m embedrank.bench.compression_run): see embedrank/bench/compression_run.py.

Writes benchmarks/results/compression_sweep.json; pass --markdown benchmarks/results/compression_sweep.md for the table.
"""

from embedrank.bench.compression_run import main

if __name__ == "__main__":
    main()
