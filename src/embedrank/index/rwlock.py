"""A reader-writer lock with writer preference, for the index classes.

Many threads may hold the read lock at once; the write lock is exclusive. A thread that
wants to write blocks new readers until it has had its turn, so a stream of searches can
never starve an add or a remove. Both locks are reentrant in one thread: a thread holding
the write lock may take the read or write lock again, and a thread holding the read lock
may take it again even while a writer waits. Upgrading (asking for the write lock while
holding only the read lock) would deadlock, so it raises RuntimeError instead.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """``with lock.read(): ...`` for shared access, ``with lock.write(): ...`` for exclusive."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0  # read holds counted against writers (nested ones included)
        self._writer: int | None = None  # ident of the thread holding the write lock
        self._write_depth = 0
        self._waiting_writers = 0
        self._local = threading.local()  # per thread: read holds, and whether each was counted

    def _read_stack(self) -> list[bool]:
        stack = getattr(self._local, "reads", None)
        if stack is None:
            stack = self._local.reads = []
        return stack

    def acquire_read(self) -> None:
        me = threading.get_ident()
        stack = self._read_stack()
        with self._cond:
            if self._writer == me:
                stack.append(False)  # covered by our own write lock
                return
            if not any(stack):
                while self._writer is not None or self._waiting_writers:
                    self._cond.wait()
            self._readers += 1
            stack.append(True)

    def release_read(self) -> None:
        stack = self._read_stack()
        if not stack:
            raise RuntimeError("release_read() without a matching acquire_read() in this thread")
        counted = stack.pop()
        if counted:
            with self._cond:
                self._readers -= 1
                if self._readers == 0:
                    self._cond.notify_all()

    def acquire_write(self) -> None:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
                return
            if any(self._read_stack()):
                raise RuntimeError("cannot take the write lock while this thread holds the read lock (no upgrades)")
            self._waiting_writers += 1
            try:
                while self._writer is not None or self._readers:
                    self._cond.wait()
            finally:
                self._waiting_writers -= 1
            self._writer = me
            self._write_depth = 1

    def release_write(self) -> None:
        with self._cond:
            if self._writer != threading.get_ident():
                raise RuntimeError("release_write() by a thread that does not hold the write lock")
            self._write_depth -= 1
            if self._write_depth == 0:
                self._writer = None
                self._cond.notify_all()

    @contextmanager
    def read(self) -> Iterator[None]:
        self.acquire_read()
        try:
            yield
        finally:
            self.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        self.acquire_write()
        try:
            yield
        finally:
            self.release_write()
