"""Inference on exported models: the model folder format, tokenization, chunking, the
embedding cache, and the two heads over one ONNX model base (Encoder, CrossEncoder)."""
