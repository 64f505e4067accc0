"""Hugging Face folder -> embedrank model folder: read the source folder (source), trace it to
ONNX (trace), verify every graph against torch (verify) and write the variants (variants:
opt, int8, fp16; exporter: the whole export); importer: an existing ONNX file made into a
folder (import_onnx, no torch). Needs the ``export`` extra (torch,
transformers) only when a model is exported."""

from embedrank.errors import ExportAccuracyWarning, ExportError, ExportVerificationError
from embedrank.export.exporter import export_model
from embedrank.export.importer import import_onnx

__all__ = ["ExportAccuracyWarning", "ExportError", "ExportVerificationError", "export_model", "import_onnx"]
