"""Cross-request batching: one worker thread per model, fed by a queue that many requests share.

A request puts one :class:`Job` (its texts and settings) on the queue and awaits its future.
The worker takes every job waiting (up to ``max_batch_requests`` jobs and about
``max_batch_tokens`` tokens), groups the jobs whose settings match, runs each group as one
model call (the model itself splits it into length-sorted token-budget batches, so a job
bigger than the budget is split and its rows come back in order) and resolves each job's
future with its own rows. A job whose client went away is dropped before it runs.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from embedrank.utils.checks import check_positive_int

__all__ = ["Batcher", "ClientGone", "Job", "QueueFullError", "estimate_tokens"]


def estimate_tokens(text: str) -> int:
    """A cheap upper-ish estimate of a text's tokens (about 4 characters a token, plus the
    special tokens) for filling batches; the model does the exact count."""
    return len(text) // 4 + 2


class QueueFullError(Exception):
    """More jobs are waiting than the batcher takes (the server answers 429)."""


class ClientGone(Exception):
    """The client disconnected while its job waited; nothing is sent back."""


@dataclass
class Job:
    """One request's share of the work: `items` (texts, or (query, document) pairs) run with
    `settings` (a hashable key: jobs with equal keys share a model call)."""

    items: Sequence
    settings: Hashable
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    tokens: int
    enqueued: float = field(default_factory=time.perf_counter)
    cancelled: bool = False


class Batcher:
    """Runs `run(items, settings) -> (array [n, ...], extra)` for queued jobs on one thread.

    run: the model call for one group of jobs (items of equal settings, concatenated); it
    returns one row per item and, optionally, per-item extra values (a list, or None).
    observe: called after each model call with (n_jobs, n_items, tokens, seconds,
    queue_wait_seconds), for metrics. max_queue: jobs allowed to wait; more raise
    QueueFullError at submit.
    """

    def __init__(self, name: str, run: Callable, *, max_batch_tokens: int = 16384, max_batch_requests: int = 256,
                 max_queue: int = 4096, observe: Callable | None = None):
        for label, value in (("max_batch_tokens", max_batch_tokens), ("max_batch_requests", max_batch_requests),
                             ("max_queue", max_queue)):
            check_positive_int(value, label)
        self.name = name
        self._run = run
        self._observe = observe
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_requests = max_batch_requests
        self.max_queue = max_queue
        self._queue: collections.deque[Job] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name=f"embedrank-{name}", daemon=True)
        self._thread.start()

    # -- the request side (event loop) -----------------------------------------------------
    @property
    def depth(self) -> int:
        """Jobs waiting (not yet taken by the worker)."""
        return len(self._queue)

    def submit(self, items: Sequence, settings: Hashable, tokens: int | None = None) -> Job:
        """Queues a job from the event loop; await ``job.future`` for (rows, extra)."""
        loop = asyncio.get_running_loop()
        job = Job(list(items), settings, loop.create_future(), loop,
                  tokens if tokens is not None else sum(estimate_tokens(str(i)) for i in items))
        with self._ready:
            if self._stopping:
                raise QueueFullError(f"the {self.name} worker is shutting down")
            if len(self._queue) >= self.max_queue:
                raise QueueFullError(f"{len(self._queue)} {self.name} jobs are already waiting")
            self._queue.append(job)
            self._ready.notify()
        return job

    async def run(self, items: Sequence, settings: Hashable, tokens: int | None = None,
                  disconnected: Callable | None = None):
        """Queues a job and waits for it. `disconnected`: an awaitable factory that returns
        when the client goes away; the job is then dropped (if not yet run) and ClientGone
        raised. A cancelled wait drops the job too."""
        job = self.submit(items, settings, tokens)
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        try:
            if watcher is None:
                return await job.future
            done, _ = await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if job.future in done:
                return job.future.result()
            job.cancelled = True
            raise ClientGone(f"the client left before its {self.name} job ran")
        except asyncio.CancelledError:
            job.cancelled = True
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    def stop(self, timeout: float | None = None) -> None:
        """Finishes the jobs already queued, then stops the worker thread."""
        with self._ready:
            self._stopping = True
            self._ready.notify_all()
        self._thread.join(timeout)

    # -- the worker thread -------------------------------------------------------------------
    def _take(self) -> list[Job] | None:
        with self._ready:
            while not self._queue and not self._stopping:
                self._ready.wait()
            if not self._queue:
                return None
            jobs, tokens = [], 0
            while self._queue and len(jobs) < self.max_batch_requests:
                if jobs and tokens + self._queue[0].tokens > self.max_batch_tokens:
                    break
                job = self._queue.popleft()
                jobs.append(job)
                tokens += job.tokens
            return jobs

    def _work(self) -> None:
        while True:
            jobs = self._take()
            if jobs is None:
                return
            live = [j for j in jobs if not j.cancelled and not j.future.cancelled()]
            groups: dict[Hashable, list[Job]] = {}
            for job in live:
                groups.setdefault(job.settings, []).append(job)
            for settings, group in groups.items():
                self._run_group(settings, group)

    def _run_group(self, settings: Hashable, group: list[Job]) -> None:
        items = [item for job in group for item in job.items]
        started = time.perf_counter()
        try:
            rows, extra = self._run(items, settings)
        except BaseException as error:  # each waiting request gets the error, the worker goes on
            for job in group:
                job.loop.call_soon_threadsafe(_set_exception, job.future, error)
            return
        seconds = time.perf_counter() - started
        if self._observe is not None:
            self._observe(len(group), len(items), sum(j.tokens for j in group), seconds,
                          max(started - j.enqueued for j in group))
        offset = 0
        for job in group:
            n = len(job.items)
            part = (rows[offset:offset + n], None if extra is None else extra[offset:offset + n])
            offset += n
            job.loop.call_soon_threadsafe(_set_result, job.future, part)


def _set_result(future: asyncio.Future, value) -> None:
    if not future.done():
        future.set_result(value)


def _set_exception(future: asyncio.Future, error: BaseException) -> None:
    if not future.done():
        future.set_exception(error)

