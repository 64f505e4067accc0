"""Reading the lines of a UTF-8 text file the same way in every reader.

Only ``"\\n"`` ends a line (a trailing ``"\\r"`` of ``"\\r\\n"`` is dropped): Python's text mode
would also split on a lone ``"\\r"``, which shifts every later line number and, in a ``.txt``
corpus, every later id. Bytes that are not UTF-8 raise an error naming the file and line, where
the decoder alone names neither.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from embedrank.errors import FormatError, InvalidValueError

__all__ = ["check_unicode", "numbered_lines"]


def numbered_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """(line number from 1, the line without its end) for each line of the UTF-8 file at `path`.

    A UTF-8 byte order mark at the start is dropped. FormatError naming the file, line and
    byte for bytes that are not UTF-8.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            if raw.endswith(b"\n"):
                raw = raw[:-1]
                if raw.endswith(b"\r"):
                    raw = raw[:-1]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise FormatError(
                    f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[error.start]:02x} at byte {error.start + 1} of "
                    "the line); save the file as UTF-8") from None
            if lineno == 1 and line.startswith("\ufeff"):
                line = line[1:]
            yield lineno, line


def check_unicode(value: str, where: str) -> str:
    """`value` unchanged; InvalidValueError naming `where` when it holds a lone surrogate (which
    JSON's ``\\ud800`` escapes can produce): no tokenizer takes it and no UTF-8 file can store it."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidValueError(f"{where} holds a lone surrogate ({value[error.start]!a} at position "
                                f"{error.start}): not a valid Unicode text") from None
    return value
