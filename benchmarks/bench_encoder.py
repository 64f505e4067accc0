"""The encoder benchmark (python -m embedrank.bench.encoder): see embedrank/bench/encoder.py."""

from embedrank.bench.encoder import main

if __name__ == "__main__":
    main()
