"""Which onnxruntime fusions CPU sessions leave out, measured: see embedrank/bench/session_fusions.py."""

from embedrank.bench.session_fusions import main

if __name__ == "__main__":
    main()
