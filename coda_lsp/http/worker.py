"""The model thread of `coda-lsp serve`: loads the model, then denoises queued requests in batches.

Requests that arrive together and ask for the same hole length and decode settings share one batch
(`coda_model.batching`): rows of different prefix/suffix lengths, each answered as soon as its own text
is final (all revealed, or ended by an end-of-text token, a stop string or `n_indent`), the batch running
until its last row is. The queue is bounded: `submit` refuses with 503 when `max_queue` requests wait.
The event loop never runs model code: the worker posts `Progress` events to each request's asyncio
queue, and a request whose client went away is dropped from its batch at the next step.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from coda_lsp.http.config import ServeConfig
from coda_lsp.http.hole_text import (Cut, apply_stops, decode, finished_lines, gate_row, pieces_of, settled_ids,
                                     visible_settled)
from coda_lsp.http.schemas import BadRequest, HoleSpec
from coda_lsp.options import ServerOptions
from coda_lsp.pipeline import fit_budget

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """One candidate of one request after a step."""

    partial: str                 # every revealed token, masked spans left out (the denoise stream)
    masked_count: int
    settled: str                 # the left-to-right text that can no longer change (what `content` streams)
    final: Optional[Cut] = None  # set once the candidate is finished
    num_tokens: int = 0          # hole tokens before the end of the text
    pieces: tuple[tuple[str, float], ...] = ()   # once final: its text as (token text, confidence) pieces
    gated: str = ""              # what the confidence gate did: "" (nothing), "cut" or "hidden"
    settled_pieces: tuple[tuple[str, float], ...] = ()   # the settled run's pieces (a remote Tab-while-streaming)


@dataclass(frozen=True)
class Timings:
    prompt_n: int                # context tokens the model read (extra + prefix + suffix)
    prompt_ms: float             # the first step: a full forward over the context (the "prompt" pass)
    predicted_ms: float          # the remaining steps
    queue_ms: float              # waiting for the model
    steps: int
    truncated: bool


@dataclass(frozen=True)
class Progress:
    step: int
    steps: int
    candidates: list[Candidate]
    timings: Optional[Timings] = None   # set on the last event of a request

    @property
    def finished(self) -> bool:
        return self.timings is not None


@dataclass(frozen=True)
class Failure:
    status: int
    message: str


@dataclass(frozen=True)
class HoleIds:
    prompt: list[int]     # extra context + prefix: the ids before the hole
    suffix: list[int]
    truncated: bool       # the budget cut something


def encode(tokenizer: Any, spec: HoleSpec) -> HoleIds:
    """Tokenize and trim to the request's budget exactly as the language server's InfillJob does."""
    extra = tokenizer.encode(spec.extra) if spec.extra else []
    prefix, suffix = tokenizer.encode(spec.prefix), tokenizer.encode(spec.suffix)
    fit = fit_budget(extra, prefix, suffix, spec.context_tokens)
    return HoleIds(fit[0] + fit[1], fit[2], sum(map(len, fit)) < len(extra) + len(prefix) + len(suffix))


@dataclass
class Pending:
    """A request waiting for (or inside) a batch; events arrive on `events` in the request's loop."""

    spec: HoleSpec
    loop: asyncio.AbstractEventLoop
    events: "asyncio.Queue[Any]" = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    enqueued: float = field(default_factory=time.perf_counter)
    ids: Optional[HoleIds] = None   # set by the model thread

    def post(self, event: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, event)
        except RuntimeError:   # the loop is closed: nobody is listening any more
            self.cancelled.set()


class BatchWorker:
    def __init__(self, cfg: ServeConfig) -> None:
        self.cfg = cfg
        self.state = "loading"          # loading | ready | error
        self.message = "loading the model"
        self.lm: Any = None             # coda_lsp.service.LoadedEngine
        self.batches = 0                # batches run, and rows in them (for logs and tests)
        self.rows = 0
        self.max_rows = 1               # rows per batch, set once the device is known
        self._queue: list[Pending] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._main, name="coda-http-model", daemon=True)

    # --- event-loop side ------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        self._thread.join(timeout=30)

    @property
    def model_name(self) -> str:
        return self.lm.path.name if self.lm is not None else "coda"

    def submit(self, spec: HoleSpec) -> Pending:
        """Queue a request; BadRequest(503) while loading, after a failed load or when the queue is full."""
        if self.state != "ready":
            raise BadRequest("Loading model" if self.state == "loading" else self.message, 503)
        pending = Pending(spec, asyncio.get_running_loop())
        with self._cond:
            if len(self._queue) >= self.cfg.max_queue:
                raise BadRequest(f"server busy: {len(self._queue)} requests are waiting (max_queue "
                                 f"{self.cfg.max_queue}); retry later", 503)
            self._queue.append(pending)
            self._cond.notify_all()
        return pending

    # --- model thread ---------------------------------------------------------------------------
    def _main(self) -> None:
        from coda_lsp.loading import load_engine
        c = self.cfg
        try:
            self.lm = load_engine(ServerOptions(model_path=c.model_path, device=c.device, dtype=c.dtype,
                                                quantize=c.quantize, threads=c.threads))
        except Exception as exc:   # ModelUnavailable, ModelLoadError, ...: /health says so
            self.state, self.message = "error", f"model not loaded: {exc}"
            log.error("%s", self.message)
            return
        self.max_rows = c.batch_rows(self.lm.device)
        self.state, self.message = "ready", f"model {self.lm.describe()}"
        log.info("%s, loaded in %.1fs", self.message, self.lm.load_s)
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self._run(batch)
            except Exception as exc:   # a bug or a device error: every row of the batch gets a 500
                log.exception("batch of %d requests failed", len(batch))
                for p in batch:
                    p.post(Failure(500, f"model error: {type(exc).__name__}: {exc}"))

    def _next_batch(self) -> Optional[list[Pending]]:
        """Wait for requests; take the oldest and the queued ones that decode with it, up to max_batch rows."""
        with self._cond:
            while not self._stopping and not self._queue:
                self._cond.wait()
            if self._stopping:
                return None
            if self.max_rows > 1 and self.cfg.batch_window_ms > 0 and len(self._queue) < self.max_rows:
                self._cond.wait(self.cfg.batch_window_ms / 1000)   # requests arriving together join
            self._queue = [p for p in self._queue if not p.cancelled.is_set()]
            if not self._queue:
                return []
            key, batch, rows = self._queue[0].spec.batch_key, [], 0
            for p in list(self._queue):
                n = p.spec.num_candidates
                if p.spec.batch_key == key and (not batch or rows + n <= self.max_rows):
                    batch.append(p)
                    rows += n
                    self._queue.remove(p)
            return batch

    def _run(self, batch: list[Pending]) -> None:
        """Tokenize, then decode rows with and without a prefix apart (`coda_model.batching` says why)."""
        for p in batch:
            p.ids = encode(self.lm.tokenizer, p.spec)
        for group in ([p for p in batch if p.ids.prompt], [p for p in batch if not p.ids.prompt]):
            if group:
                self._decode(group)

    def _decode(self, batch: list[Pending]) -> None:
        from coda_model.batching import HoleRequest, denoise_packed, pack_rows
        engine = self.lm.engine
        rows, starts = [], []
        for p in batch:
            s = p.spec
            starts.append(len(rows))
            rows += [HoleRequest(p.ids.prompt, p.ids.suffix)] * s.num_candidates
        spec = batch[0].spec
        t0 = time.perf_counter()
        packed = pack_rows(engine, rows, spec.length)
        self.batches += 1
        self.rows += len(rows)
        live = list(zip(batch, starts))
        first_ms: Optional[float] = None
        for state in denoise_packed(engine, packed, spec.length, spec.decode):
            ms = (time.perf_counter() - t0) * 1e3
            first_ms = ms if first_ms is None else first_ms
            tokens, masked = state.tokens.tolist(), state.masked.tolist()
            still = []
            for p, r0 in live:
                if p.cancelled.is_set():
                    continue
                s = p.spec
                over = s.t_max_predict_ms > 0 and ms > s.t_max_predict_ms
                cands = [self._candidate(state, tokens[r], masked[r], r, s, over) for r in range(r0, r0 + s.num_candidates)]
                done = all(c.final is not None for c in cands)
                timings = None
                if done:
                    trunc = p.ids.truncated or any(packed.truncated[r0:r0 + s.num_candidates])
                    timings = Timings(len(p.ids.prompt) + len(p.ids.suffix), first_ms, ms - first_ms,
                                      (t0 - p.enqueued) * 1e3, state.step, trunc)
                p.post(Progress(state.step, max(state.steps, state.step), cands, timings))
                if not done:
                    still.append((p, r0))
            live = still
            if not live:   # every row answered (or its client gone): dropping the iterator stops the batch
                break
        log.info("batch of %d requests (%d rows, hole %d) in %.0f ms", len(batch), len(rows), spec.length,
                 (time.perf_counter() - t0) * 1e3)

    def _candidate(self, state: Any, tokens: list[int], masked: list[bool], row: int, spec: HoleSpec,
                   over_time: bool) -> Candidate:
        engine = self.lm.engine
        ids, ended = settled_ids(tokens, masked, engine.stop_ids)
        settled = decode(self.lm.tokenizer, ids)
        cut = apply_stops(settled, spec.stop, spec.n_indent, ended)
        partial = engine.hole_text(state, row, partial=True)
        num_masked = sum(masked)
        final = None
        if num_masked == 0 or ended or cut.text != settled:
            final = cut
        elif over_time:
            final = Cut(finished_lines(visible_settled(settled, spec.stop, spec.n_indent)), "limit")
        visible = final.text if final is not None else visible_settled(settled, spec.stop, spec.n_indent)
        spans = engine.hole_spans(state, row)
        final, visible, gated = gate_row(spans, final, visible, spec.gate)
        pieces = pieces_of(spans, final.text) if final is not None else ()
        head = pieces_of(spans, settled) if spec.stream_denoise else ()
        return Candidate(partial, num_masked, visible, final, len(ids), pieces, gated, head)
