"""The kernel benchmark (python -m embedrank.bench.kernels): see embedrank/bench/kernels.py."""

from embedrank.bench.kernels import main

if __name__ == "__main__":
    main()
