"""Every error and warning embedrank raises on purpose, in one family.

``EmbedrankError`` is the base: ``except embedrank.EmbedrankError`` catches what a caller did
wrong (a bad argument, a damaged or foreign file, a missing extra), while a bug in embedrank
stays an ordinary exception with its traceback. Each class also derives from the built-in
that code written before the family existed expects (``ValueError``, ``TypeError``,
``KeyError``, ``FileNotFoundError``, ``ImportError``, ``UserWarning``...), so
``except ValueError`` keeps working.
"""

from __future__ import annotations

__all__ = [
    "AttentionFallbackWarning",
    "EmbedrankError",
    "EmbedrankWarning",
    "EnvironmentSettingError",
    "ExistingPathError",
    "ExportAccuracyWarning",
    "ExportError",
    "ExportVerificationError",
    "FormatError",
    "IndexFormatError",
    "InvalidTypeError",
    "InvalidValueError",
    "MissingDependencyError",
    "MissingFileError",
    "ModelFolderError",
    "NotFittedError",
    "PromptTruncationWarning",
    "RetrieverFormatError",
    "SourceModelError",
    "TruncationWarning",
    "UnknownIdError",
    "UsageError",
]


class EmbedrankError(Exception):
    """Base of the errors embedrank raises on purpose (never for a bug of its own)."""


# -- arguments ---------------------------------------------------------------------------------
class InvalidValueError(EmbedrankError, ValueError):
    """An argument of the right type with a value embedrank cannot use (out of range, NaN, empty...)."""


class InvalidTypeError(EmbedrankError, TypeError):
    """An argument of the wrong type."""


class UnknownIdError(EmbedrankError, KeyError):
    """An id (of a vector, a document) that the index or retriever does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; the message is a sentence
        return str(self.args[0]) if self.args else ""


class NotFittedError(EmbedrankError, ValueError, RuntimeError):
    """An object used before it was fitted (an Int8Quantizer without ranges)."""


class EnvironmentSettingError(EmbedrankError, ImportError):
    """An environment variable embedrank reads (EMBEDRANK_ISA...) holds a value it cannot use;
    raised while importing the kernels."""


class UsageError(EmbedrankError):
    """A command-line request that cannot be carried out as given (printed as one line)."""


# -- files -------------------------------------------------------------------------------------
class MissingFileError(EmbedrankError, FileNotFoundError):
    """A file or folder the caller named does not exist."""


class ExistingPathError(EmbedrankError, FileExistsError):
    """Refusing to write over a path that holds something embedrank did not write."""


class FormatError(EmbedrankError, ValueError):
    """A file or folder that is not in the format embedrank expects, or is damaged."""


class ModelFolderError(FormatError):
    """An embedrank model folder is missing a file or holds an inconsistent one."""


class SourceModelError(FormatError):
    """A Hugging Face / sentence-transformers folder that export cannot read, or an ONNX file (and
    tokenizer) that import_onnx cannot make into a model folder."""


class IndexFormatError(FormatError):
    """A path that is not an embedrank index, or an index with a missing or damaged file."""


class RetrieverFormatError(FormatError):
    """A saved retriever folder is missing a file or holds an inconsistent one."""


# -- environment -------------------------------------------------------------------------------
class MissingDependencyError(EmbedrankError, ImportError):
    """An optional dependency (an extra, a model or data package) is not installed."""


class ExportError(EmbedrankError, RuntimeError):
    """Exporting a model to ONNX failed."""


class ExportVerificationError(ExportError):
    """An exported graph's outputs differ from torch's beyond the tolerance."""


# -- warnings ----------------------------------------------------------------------------------
class EmbedrankWarning(EmbedrankError, UserWarning):
    """Base of embedrank's warnings."""


class TruncationWarning(EmbedrankWarning):
    """Some texts were longer than the model's max_seq_length and were cut."""


class PromptTruncationWarning(TruncationWarning):
    """The prompt alone fills max_seq_length: no token of the texts fits after it, so every text
    was cut to the prompt (and gets the same vector)."""


class ExportAccuracyWarning(EmbedrankWarning):
    """A variant (int8, fp16) moved further from torch's outputs than expected."""


class AttentionFallbackWarning(EmbedrankWarning, RuntimeWarning):
    """A CPU session runs onnxruntime's own attention because embedrank's fused kernel could not."""
