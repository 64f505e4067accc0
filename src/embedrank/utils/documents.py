"""What a document is: a str, or a BEIR dict {"title", "text"}, embedded as title + " " + text."""

from __future__ import annotations

from embedrank.errors import InvalidTypeError

__all__ = ["check_docs", "document_text", "join_title"]


def join_title(title: str, text: str) -> str:
    """title + " " + text, stripped; just the text when the title is empty."""
    return f"{title} {text}".strip() if title else text


def document_text(doc) -> str:
    """A document as one string: a str as it is, a dict {"text", "title"?} as join_title."""
    if isinstance(doc, str):
        return doc
    if isinstance(doc, dict) and "text" in doc:
        title, text = doc.get("title") or "", doc["text"]
        if not isinstance(text, str) or not isinstance(title, str):
            bad = "text" if not isinstance(text, str) else "title"
            raise InvalidTypeError(f"a document's {bad!r} must be a str, got {type(doc[bad]).__name__}")
        return join_title(title, text)
    raise InvalidTypeError(f"a document must be a str or a dict with 'text' (and 'title'), got {type(doc).__name__}")


def check_docs(docs) -> list:
    """A list of documents from an iterable; anything but str or dict raises naming the index."""
    if docs is None or not hasattr(docs, "__iter__"):
        raise InvalidTypeError(f"docs must be a sequence of documents, got {type(docs).__name__}")
    out = list(docs)
    for i, d in enumerate(out):
        if not isinstance(d, (str, dict)):
            raise InvalidTypeError(f"docs[{i}] must be a str or a dict with 'text', got {type(d).__name__}")
    return out
