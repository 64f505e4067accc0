"""Child process of test_retriever's kill tests: reopens the retriever at PATH, adds one
document and saves it back to PATH, stopping in the middle of the save (after documents.jsonl
and chunks.npz are written into the hidden temporary folder, before the index is).

    python -m tests.retrieval.save_worker PATH kill    # SIGKILLs itself there
    python -m tests.retrieval.save_worker PATH pause   # prints "writing", waits for a line on
                                                       # stdin, finishes the save, prints "saved"
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from embedrank.retrieval.retriever import Retriever


def main() -> None:
    path, mode = Path(sys.argv[1]), sys.argv[2]
    retriever = Retriever.load(path)
    retriever.add([f"document number {len(retriever)} added by a worker"])
    save_index = retriever.index.save

    def stop_midway(folder):
        if mode == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        print("writing", flush=True)
        sys.stdin.readline()
        return save_index(folder)

    retriever.index.save = stop_midway
    retriever.save(path)
    print("saved", flush=True)


if __name__ == "__main__":
    main()
