"""ONNX Runtime plumbing: sessions (providers, threads, batching budgets) and the in-memory
rewrite of a graph's attention cores onto embedrank's fused kernel."""
