"""Hugging Face folder -> embedrank model folder: trace to ONNX, verify against torch, and
write the variants (fp32, opt, int8, pooled, fp16). Needs the ``export`` extra (torch,
transformers) only when a model is exported."""

from embedrank.export.exporter import (ExportAccuracyWarning, ExportError, ExportVerificationError, export_model,
                                       read_export_config)

__all__ = ["ExportAccuracyWarning", "ExportError", "ExportVerificationError", "export_model", "read_export_config"]
