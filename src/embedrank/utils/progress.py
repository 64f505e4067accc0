"""Progress bars for long work: tqdm when asked for, or by default on a terminal."""

from __future__ import annotations

import sys

__all__ = ["progress_bar"]


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def set_postfix(self, **values) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, show: bool | None, desc: str, unit: str = "text", min_total: int = 256,
                 leave: bool = True):
    """A tqdm bar when `show` is True, or when it is None and stderr is a terminal and the work
    is long (`min_total` items or more, or of unknown size); else an object whose update,
    set_postfix and close do nothing (tqdm is then never imported)."""
    if show is None:
        show = sys.stderr.isatty() and (total is None or total >= min_total)
    if not show:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, leave=leave)
