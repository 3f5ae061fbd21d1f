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
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Protocol


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


class Scheduler:
    def __init__(self) -> None:
        # one worker: model steps never overlap, and a later job queues behind a dropped step
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="coda-model")
        self._latest: dict[str, Ticket] = {}
        self._lock = asyncio.Lock()
        self.active = 0

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

        `background` jobs (speculation) are not counted in `active`, which drives the busy status.

        `asyncio.CancelledError` ($/cancelRequest) propagates from the await of the running step.
        """
        if debounce_ms > 0:
            await asyncio.sleep(debounce_ms / 1000)
            if ticket.stale:
                return None
        async with self._lock:
            if ticket.stale or (abort is not None and abort()):
                return None
            self.active += not background
            try:
                job = await self.call(make_job)
                while not job.done:
                    partial = await self.call(job.step)
                    if ticket.stale or (abort is not None and abort()):
                        getattr(job, "close", lambda: None)()   # a remote job stops its stream
                        return None
                    on_step(partial)
                return job
            finally:
                self.active -= not background
                if self._latest.get(ticket.key) is ticket:
                    del self._latest[ticket.key]

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


class TypeThroughCache:
    """Completions by position; a lookup after typing a prefix of an item returns the rest of it."""

    WINDOW = 2000

    def __init__(self, max_entries: int = 64) -> None:
        self._entries: OrderedDict[str, CachedCompletion] = OrderedDict()
        self.max_entries = max_entries

    def put(self, uri: str, text: str, start: int, end: int, items: list[str]) -> None:
        if not items:
            return
        self._entries[uri] = CachedCompletion(uri, start, end - start, text[max(0, start - self.WINDOW):start],
                                              text[start:start + self.WINDOW], list(items))
        self._entries.move_to_end(uri)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def get(self, uri: str, text: str, cursor: int) -> Optional[tuple[list[str], int]]:
        """(remaining items, replace length) when the text typed since the entry is a prefix of its items."""
        e = self._entries.get(uri)
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

    def clear(self, uri: Optional[str] = None) -> None:
        if uri is None:
            self._entries.clear()
        else:
            self._entries.pop(uri, None)


class ResultCache:
    """LRU of final items by a hash of the exact model input (prompt ids, length, decode settings)."""

    def __init__(self, max_entries: int = 256) -> None:
        self._data: OrderedDict[str, list[str]] = OrderedDict()
        self.max_entries = max_entries

    @staticmethod
    def key(*parts: Any) -> str:
        return hashlib.sha1(repr(parts).encode("utf-8", "surrogatepass")).hexdigest()

    def get(self, key: str) -> Optional[list[str]]:
        if key in self._data:
            self._data.move_to_end(key)
            return list(self._data[key])
        return None

    def put(self, key: str, items: list[str]) -> None:
        self._data[key] = list(items)
        self._data.move_to_end(key)
        while len(self._data) > self.max_entries:
            self._data.popitem(last=False)
