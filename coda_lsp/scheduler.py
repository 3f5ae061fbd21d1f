"""Latency policy: debounce, cancel-previous per document, one model at a time, type-through reuse.

`Scheduler.run` drives a `StepJob` (anything with a blocking `step()` returning a partial result
until it says it is done) one denoise step at a time on a single worker thread, so the event loop
never runs model code and a cancelled request stops within one step: the step already running in
the worker finishes, its result is dropped, and no further partial is sent.

`TypeThroughCache` answers again instantly when the user types characters that the last completion
predicted: the stored item minus what was typed, with the same replace range shifted.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol

from coda_lsp.cache_limits import BoundedLru, CacheLimits, text_bytes
from coda_lsp.heap import release_free_memory


class StepJob(Protocol):
    def step(self) -> Any: ...          # runs one denoise step (blocking); returns a partial
    @property
    def done(self) -> bool: ...


@dataclass
class Ticket:
    """One scheduled request. `superseded` is set when a newer request on the same key arrives."""
    key: str
    superseded: threading.Event = field(default_factory=threading.Event)

    @property
    def stale(self) -> bool:
        return self.superseded.is_set()


@dataclass
class ThreadPolicy:
    """CPU threads per job: a request the user waits on gets `foreground` (measured at load: every
    physical core unless fewer were as fast), speculation and other background work get one, so they
    never hold cores that a real request then waits for. Applied on the worker thread at job start."""
    foreground: Optional[int] = None     # None: leave the thread count as loading set it
    background: int = 1
    current: Optional[int] = None

    def use(self, background: bool) -> None:
        n = self.background if background else self.foreground
        if n is None or n == self.current:
            return
        import torch   # the worker only runs jobs once a model is loaded
        torch.set_num_threads(n)
        self.current = n


class Scheduler:
    def __init__(self, on_idle: Optional[Callable[[], Any]] = release_free_memory) -> None:
        # one worker: model steps never overlap, and a later job queues behind a dropped step
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coda-model")
        self._latest: dict[str, Ticket] = {}
        self._lock = asyncio.Lock()
        self.active = 0
        self.waiting = 0        # real (not background) runs waiting for the model: background runs yield to them
        self.steps_run = 0      # denoise steps run on the worker, all jobs (tests count steps, not seconds)
        self.queued = 0          # jobs debouncing, waiting for the worker or running
        self.on_idle = on_idle   # run on the worker after the last queued job that used it
        self.threads = ThreadPolicy()

    def ticket(self, key: str) -> Ticket:
        """Register a new request for `key`, superseding the previous one (cancel-previous)."""
        self.supersede(key)
        self._latest[key] = t = Ticket(key)
        return t

    def supersede(self, key: str) -> None:
        """Stop the request registered under `key`, if any, within one step."""
        old = self._latest.get(key)
        if old is not None:
            old.superseded.set()

    async def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking model-side work on the worker thread."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def run(self, ticket: Ticket, make_job: Callable[[], StepJob], on_step: Callable[[Any], None],
                  debounce_ms: int = 0, abort: Optional[Callable[[], bool]] = None,
                  background: bool = False) -> Optional[StepJob]:
        """Debounce, wait for the model, then step the job; None if superseded (or `abort()`) meanwhile.

        `background` jobs (speculation) are not counted in `active`, which drives the busy status, and
        give the model up to any real run that is waiting for it, within one step: a speculative step at
        1.7B can be a seconds-long refresh, and a request must not queue behind a whole job.

        `asyncio.CancelledError` ($/cancelRequest) propagates from the await of the running step.
        """
        self.queued += 1
        ran = False
        try:
            if debounce_ms > 0:
                await asyncio.sleep(debounce_ms / 1000)
                if ticket.stale:
                    return None
            self.waiting += not background
            try:
                await self._lock.acquire()
            finally:
                self.waiting -= not background
            try:
                if ticket.stale or (abort is not None and abort()) or (background and self.waiting):
                    return None
                self.active += not background
                try:
                    ran = True
                    job = await self.call(self._start, make_job, background)
                    while not job.done:
                        partial = await self.call(self._step, job)
                        if ticket.stale or (abort is not None and abort()):
                            getattr(job, "close", lambda: None)()   # a remote job stops its stream
                            return None
                        if background and self.waiting:   # a real request preempts speculation within one step
                            return None
                        on_step(partial)
                    return job
                finally:
                    self.active -= not background
            finally:
                self._lock.release()
                self.release(ticket)
        finally:
            self.queued -= 1
            if ran and self.queued == 0 and self.on_idle is not None:
                try:
                    self.executor.submit(self.on_idle)   # after the job, before any later one
                except RuntimeError:                     # shut down meanwhile
                    pass

    def _start(self, make_job: Callable[[], StepJob], background: bool) -> StepJob:
        self.threads.use(background)
        return make_job()

    def _step(self, job: StepJob) -> Any:
        self.steps_run += 1
        return job.step()

    def release(self, ticket: Ticket) -> None:
        """Forget a finished (or never run) request, unless a newer one took its key."""
        if self._latest.get(ticket.key) is ticket:
            del self._latest[ticket.key]

    def forget(self, keys: list[str]) -> None:
        """Stop and forget every request under `keys` (a closed document's)."""
        for key in keys:
            self.supersede(key)
            self._latest.pop(key, None)

    def __len__(self) -> int:
        """Requests registered (running, waiting or debouncing)."""
        return len(self._latest)

    def shutdown(self) -> None:
        for t in self._latest.values():
            t.superseded.set()
        self.executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class CachedCompletion:
    uri: str
    start: int                  # str index of the hole start when it was computed
    replace_len: int            # characters after the start that the item replaces
    before: str                 # text just before the hole start (a window)
    after: str                  # text from the hole start on (a window)
    items: list[str]

    def size_bytes(self) -> int:
        return text_bytes([self.before, self.after, *self.items]) + 200   # + the object and its list


class TypeThroughCache(BoundedLru):
    """Completions by position; a lookup after typing a prefix of an item returns the rest of it.

    One entry per document (the last completion there), bounded by `CacheLimits.type_through_*`."""

    WINDOW = 2000

    def __init__(self, max_entries: int = CacheLimits.type_through_entries,
                 max_bytes: int = CacheLimits.type_through_bytes) -> None:
        super().__init__(max_entries, max_bytes)

    def put(self, uri: str, text: str, start: int, end: int, items: list[str]) -> None:
        if not items:
            return
        entry = CachedCompletion(uri, start, end - start, text[max(0, start - self.WINDOW):start],
                                 text[start:start + self.WINDOW], list(items))
        self.store(uri, uri, entry, entry.size_bytes())

    def get(self, uri: str, text: str, cursor: int) -> Optional[tuple[list[str], int]]:
        """(remaining items, replace length) when the text typed since the entry is a prefix of its items."""
        e = self.lookup(uri)
        if e is None or cursor < e.start or cursor - e.start > 512:
            return None
        if text[max(0, e.start - self.WINDOW):e.start] != e.before:
            return None
        typed = text[e.start:cursor]
        if text[cursor:cursor + len(e.after)] != e.after:   # what followed the hole must still follow it
            return None
        items = [it[len(typed):] for it in e.items if it.startswith(typed) and len(it) > len(typed)]
        if not items:
            return None
        return items, e.replace_len


class ResultCache(BoundedLru):
    """LRU of final items by a hash of the exact model input (prompt ids, length, decode settings).

    Each entry remembers the document it was computed for, so closing that document drops it."""

    def __init__(self, max_entries: int = CacheLimits.result_entries, max_bytes: int = CacheLimits.result_bytes) -> None:
        super().__init__(max_entries, max_bytes)

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha1(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> Optional[list[str]]:
        hit = self.lookup(key)
        return None if hit is None else list(hit)

    def put(self, key: str, items: list[str], uri: str = "") -> None:
        self.store(key, uri, list(items), text_bytes(items) + 120 + 8 * len(items))


class Speculations:
    """Speculative runs in flight by result key, so a real request for the same hole joins one.

    Bounded by count (`CacheLimits.speculations`): each run holds a fork of its document until it
    ends. `drop(uri)` resolves a closed document's runs to None at once (joiners compute for
    themselves); the runs themselves stop at their next step (the scheduler supersedes them)."""

    max_bytes = None

    def __init__(self, max_entries: int = CacheLimits.speculations) -> None:
        self.max_entries = max_entries
        self._runs: dict[str, tuple[str, "asyncio.Future[Optional[list[str]]]", int]] = {}

    def start(self, key: str, uri: str, nbytes: int) -> Optional["asyncio.Future[Optional[list[str]]]"]:
        """A future to resolve with the run's texts, or None when at the bound or already running."""
        if key in self._runs or len(self._runs) >= self.max_entries:
            return None
        fut: asyncio.Future[Optional[list[str]]] = asyncio.get_running_loop().create_future()
        self._runs[key] = (uri, fut, nbytes)
        return fut

    def finish(self, key: str, texts: Optional[list[str]]) -> None:
        run = self._runs.pop(key, None)
        if run is not None and not run[1].done():
            run[1].set_result(texts)

    def joinable(self, key: str) -> Optional["asyncio.Future[Optional[list[str]]]"]:
        run = self._runs.get(key)
        return run[1] if run is not None else None

    def __contains__(self, key: str) -> bool:
        return key in self._runs

    def drop(self, uri: str) -> None:
        for key in [k for k, run in self._runs.items() if run[0] == uri]:
            self.finish(key, None)

    def clear(self) -> None:
        for key in list(self._runs):
            self.finish(key, None)

    def __len__(self) -> int:
        return len(self._runs)

    def size_bytes(self) -> int:
        return sum(run[2] for run in self._runs.values())
