"""embedrank's attention kernel inside onnxruntime against onnxruntime's own ops: see
embedrank/bench/native_attention.py."""

from embedrank.bench.native_attention import main

if __name__ == "__main__":
    main()
