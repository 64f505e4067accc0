"""A Ray driver that test_ray kills with SIGKILL mid-job, and the texts its tests encode.

    python -m tests.integrations.ray_driver ADDRESS MODEL OUTPUT N BATCH_SIZE

connects to the running cluster at ADDRESS, embeds make_texts(N) into the folder OUTPUT
with two actors and BATCH_SIZE rows per file, and prints "done" when the job finishes.
"""

from __future__ import annotations

import sys

WORDS = ("cell", "protein", "gene", "tumour", "binding", "receptor", "dose", "trial", "mouse", "expression",
         "pathway", "signal", "immune", "response", "clinical", "patients", "cohort", "risk", "therapy", "virus")


def make_texts(n: int, long_every: int = 0) -> list[str]:
    """n distinct texts of 5 to 40 words (every `long_every`-th one about 400 words, longer
    than one 224-token window), the same on every call."""
    texts = []
    for i in range(n):
        length = 400 if long_every and i % long_every == 0 else 5 + (i * 7) % 36
        words = [WORDS[(i * 3 + j * j) % len(WORDS)] for j in range(length)]
        texts.append(f"text {i}: " + " ".join(words) + ".")
    return texts


def main(address: str, model: str, output: str, n: int, batch_size: int) -> None:
    import ray

    from embedrank.integrations.ray import embed_dataset

    ray.init(address=address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = [{"id": f"doc-{i}", "text": text} for i, text in enumerate(make_texts(n))]
    ds = ray.data.from_items(rows, override_num_blocks=8)
    embed_dataset(ds, model, output=output, batch_size=batch_size, concurrency=2, num_threads=1)
    print("done", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5]))
