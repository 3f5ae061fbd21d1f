"""The completion service: runs requests through the pipeline with scheduling and caches; no LSP types.

`CompletionService` is what the protocol handlers call. It owns the open documents, the loaded
model, the scheduler and the caches, and turns "complete at this position" / "fill this range" into
items (text + replace range) and per-step `PartialEvent`s, by calling the four stages of
`coda_lsp.pipeline` (should_complete -> build_context -> infer -> postprocess). Every request gets
an id that is in each of its log lines and partial notifications.

After each completion it speculates, as llama.vim and Tabby do: it computes in the background the
completion that follows accepting the first item, so the request that comes after Tab is answered
from the result cache (or joins the speculation still running) instead of waiting for the model.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from coda_lsp import pipeline
from coda_lsp.cache_limits import CacheLimits, CacheSet
from coda_lsp.context import CompletionContext
from coda_lsp.documents import Document, DocumentStore, Pos
from coda_lsp.calibrate import calibrated
from coda_lsp.gate import Candidate, hidden_note
from coda_lsp.http.remote import RemoteEngine, RemoteUnavailable
from coda_lsp.loading import LoadedEngine, context_store, cpu_threads, open_engine
from coda_lsp.options import ServerOptions, merge_options, settings_section
from coda_lsp.pipeline import CompletionResult, InferRequest, PartialEvent
from coda_lsp.scheduler import ResultCache, Scheduler, Speculations, TypeThroughCache
from coda_lsp.stats import StatsRecorder

log = logging.getLogger(__name__)
MODEL_FIELDS = ("model_path", "device", "dtype", "quantize", "engine")   # a change of these reloads the model (or remote)
OnPartial = Optional[Callable[[PartialEvent], None]]


@dataclass
class FillOutcome:
    """What `fill_selection` decided: an edit to apply, or why there is none (and whether to tell the user)."""
    text: Optional[str] = None
    start: Optional[Pos] = None
    end: Optional[Pos] = None
    reason: str = ""
    notify: bool = False


@dataclass
class Reconfigured:
    warnings: list[str]
    reload: bool


@dataclass
class CompletionService:
    options: ServerOptions = field(default_factory=ServerOptions)
    docs: DocumentStore = field(default_factory=DocumentStore)
    scheduler: Scheduler = field(default_factory=Scheduler)
    limits: CacheLimits = field(default_factory=CacheLimits)
    model: Optional[LoadedEngine] = None    # or a RemoteEngine (options.engine): the same jobs, decoded elsewhere
    state: str = "loading"                  # loading | ready | error
    message: str = ""
    remote_error: str = ""                  # the remote engine's last failure ("" = it answered); one status line
    stats: StatsRecorder = field(default_factory=StatsRecorder)   # local acceptance statistics
    background: set = field(default_factory=set)   # running speculation / settings tasks (kept referenced)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        lim = self.limits
        self.type_cache = TypeThroughCache(lim.type_through_entries, lim.type_through_bytes)
        self.result_cache = ResultCache(lim.result_entries, lim.result_bytes)
        self.speculations = Speculations(lim.speculations)   # by result key
        self.caches = CacheSet(type_through=self.type_cache, result=self.result_cache, speculations=self.speculations)

    def memory_report(self) -> dict[str, Any]:
        """Sizes against bounds, for `coda/stats`."""
        caches = self.caches.stats()
        contexts = self.context_store()
        if contexts is not None:   # bounded by contextCacheMb and its own entry limit
            caches["context_kv"] = {"entries": len(contexts), "bytes": contexts.size_bytes(),
                                    "max_entries": contexts.max_entries, "max_bytes": contexts.max_bytes}
        return {"caches": caches, "documents": self.docs.stats(),
                "in_flight": {"tickets": len(self.scheduler), "background_tasks": len(self.background)}}

    def next_id(self, kind: str = "c") -> str:
        return f"{kind}{next(self._ids)}"

    # --- model and settings ----------------------------------------------------------------------------
    async def load(self) -> None:
        """Load the model on the worker thread; sets `state`/`message` (never raises)."""
        self.state, self.message = "loading", f"loading {self.options.model_path or 'the default model'}"
        if self.options.engine:
            await self._connect()
            return
        try:
            self.model = await self.scheduler.call(open_engine, self.options)
            if self.options.latency_budget_ms:
                await self.calibrate()
        except Exception as exc:   # ModelUnavailable, ModelLoadError, ImportError of the engine, ...
            self.model = None
            self.state, self.message = "error", f"model not loaded: {exc}"
            log.error("%s", self.message)
            return
        m = self.model
        self.scheduler.threads.foreground = m.threads
        self.state, self.message = "ready", f"model {m.describe()}, loaded in {m.load_s:.1f}s"
        log.info("%s", self.message)

    async def calibrate(self) -> None:
        """latencyBudgetMs: measure this device on the worker and fit context, steps and block length to it."""
        self.options, costs, choice = await self.scheduler.call(calibrated, self.model.engine, self.options)
        log.info("latency budget %s ms: measured %s, chose %s", self.options.latency_budget_ms, costs, choice)

    async def _connect(self) -> None:
        """A remote engine is 'ready' at once (every request tries it, so it reconnects by itself);
        whether it answers now only sets `remote_error`."""
        remote = open_engine(self.options)
        self.model, self.state = remote, "ready"
        try:
            health = await self.scheduler.call(remote.health)
            self.remote_error = "" if health == "ok" else f"remote engine {remote.url} says {health}"
        except RemoteUnavailable as exc:
            self.remote_error = str(exc)
        self.message = f"remote engine {remote.url}" + (f" ({self.remote_error})" if self.remote_error else "")
        (log.warning if self.remote_error else log.info)("%s", self.message)

    def reconfigure(self, raw: Any, base: Optional[ServerOptions] = None) -> Reconfigured:
        """Apply workspace/didChangeConfiguration settings, the client's whole section: a key it no longer
        sends takes `base`'s value (the server's defaults; None = merge over the current options).
        Caches cleared, threads applied live, `reload` when the model itself changed (the caller starts
        the load, with its progress)."""
        old = self.options
        self.options, warnings = merge_options(old, raw) if base is None else settings_section(base, old, raw)
        self.result_cache.clear()
        self.type_cache.clear()
        reload = any(getattr(old, k) != getattr(self.options, k) for k in MODEL_FIELDS)
        if reload:
            log.info("model settings changed: reloading")
            self.model = None
        elif self.model is not None:
            if self.options.threads != old.threads:
                self.apply_threads()   # a load in progress reads the new value itself
            if not isinstance(self.model, LoadedEngine):
                return Reconfigured(warnings, reload)   # a remote engine keeps its own contexts and budget
            if self.options.context_cache_mb != old.context_cache_mb:
                self.model.contexts = context_store(self.options.context_cache_mb)
            fitted = (self.options.context_tokens, self.options.decode.steps, self.options.decode.block_length) != \
                (old.context_tokens, old.decode.steps, old.decode.block_length)   # a whole section resets them
            if self.options.latency_budget_ms and (self.options.latency_budget_ms != old.latency_budget_ms or fitted):
                self._background(self.calibrate())
        return Reconfigured(warnings, reload)

    def apply_threads(self) -> None:
        """A changed `threads` setting takes effect at the next request, without reloading the model."""
        measured = self.model.threads if isinstance(self.model, LoadedEngine) else None
        self.scheduler.threads.foreground = cpu_threads(self.options.threads) or measured

    @property
    def ready(self) -> bool:
        return self.model is not None and self.state == "ready"

    def context(self, doc: Document, start: int, end: Optional[int] = None) -> CompletionContext:
        return pipeline.build_context(doc, start, end, self.options, self.docs.others(doc.uri, doc.language))

    def close(self, uri: str) -> None:
        """didClose: the document and everything kept for it (cache entries, speculations, requests) go."""
        self.docs.close(uri)
        self.caches.drop(uri)
        self.scheduler.forget([uri, f"fill:{uri}", f"speculate:{uri}"])
        contexts = self.context_store()
        if contexts is not None:
            contexts.drop(uri)   # its context K/V are freed with the document

    def context_store(self):
        """The loaded model's per-document context K/V store (None: remote engine, not loaded, or turned off)."""
        return getattr(self.model, "contexts", None)

    # --- requests --------------------------------------------------------------------------------------
    async def complete(self, uri: str, pos: Pos, *, invoked: bool = False,
                       on_partial: OnPartial = None) -> Optional[CompletionResult]:
        """Items for the hole at `pos`, or None (not ready, unknown document, superseded, nothing useful)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        rid = self.next_id()
        doc = self.docs.get(uri)
        reason = pipeline.should_complete(doc, self.options)
        if reason is not None:
            log.debug("[%s] %s: no completion (%s)", rid, uri, reason)
            return None
        cursor = doc.offset_at(pos)
        hit = self.type_cache.get(uri, doc.text, cursor)
        if hit is not None and (not invoked or len(hit[0]) > 1):   # invoked wants several: one is not enough
            items, replace_len = hit
            end = doc.position_at(min(len(doc.text), cursor + replace_len))
            return CompletionResult(uri, doc.version, doc.position_at(cursor), end, items[:3 if invoked else 1],
                                    source="type-through", request_id=rid, total_s=time.perf_counter() - t0)
        if not self.ready:
            return None
        t1 = time.perf_counter()
        ctx = self.context(doc, cursor)
        context_s = time.perf_counter() - t1
        result = await self._run(doc, ctx, rid, num_candidates=3 if invoked else 1,
                                 debounce_ms=0 if invoked else self.options.debounce_ms, on_partial=on_partial)
        if result is not None:
            self.type_cache.put(uri, doc.text, ctx.start, ctx.end, result.items)
            result.total_s = time.perf_counter() - t0
            result.context_s = context_s
            result.cpu_s += time.thread_time() - c0
            if result.items and self.options.speculate:
                self._background(self._speculate(doc, result.version, ctx, result.items[0]))
        return result

    async def fill(self, uri: str, start: Pos, end: Pos, *, on_partial: OnPartial = None) -> Optional[CompletionResult]:
        """The rewrite of the range [start, end) (a selection), or None."""
        doc = self.docs.get(uri)
        if doc is None or doc.binary or not self.ready:
            return None
        a, b = sorted((doc.offset_at(start), doc.offset_at(end)))
        if a == b:
            return await self.complete(uri, start, invoked=True, on_partial=on_partial)
        ctx = self.context(doc, a, b)
        return await self._run(doc, ctx, self.next_id("f"), num_candidates=1, debounce_ms=0, on_partial=on_partial,
                               key=f"fill:{uri}")

    async def fill_selection(self, uri: str, start: Pos, end: Pos, *, on_partial: OnPartial = None) -> FillOutcome:
        """`fill`, plus the rules for applying it: nothing when the document changed while filling."""
        doc = self.docs.get(uri)
        if doc is None:
            return FillOutcome(reason=f"{uri} is not open")
        if not self.ready:
            return FillOutcome(reason=f"model not ready ({self.state}: {self.message})")
        version = doc.version
        result = await self.fill(uri, start, end, on_partial=on_partial)
        current = self.docs.get(uri)
        if current is None or current.version != version:
            return FillOutcome(reason="document changed while filling", notify=True)
        if result is None or not result.items:
            return FillOutcome(reason="no fill (superseded or empty)")
        return FillOutcome(text=result.items[0], start=result.start, end=result.end)

    async def _run(self, doc: Document, ctx: CompletionContext, rid: str, *, num_candidates: int, debounce_ms: int,
                   on_partial: OnPartial, key: Optional[str] = None) -> Optional[CompletionResult]:
        """Stages 3 and 4 for one request: from the result cache, a speculation in flight, or the model."""
        uri, version = doc.uri, doc.version
        start, end = doc.position_at(ctx.start), doc.position_at(ctx.end)
        if num_candidates > 1 and self.result_cache.get(pipeline.infer_request(ctx, self.options, 1).cache_key()) is None:
            # invoked with nothing shown before: the greedy suggestion first (what an automatic request and
            # `coda-lsp complete` give), then the sampled ones; its own end is not the request's end
            steps_only = (lambda e: None if e.done else on_partial(e)) if on_partial is not None else None
            if await self._run(doc, ctx, rid, num_candidates=1, debounce_ms=debounce_ms, on_partial=steps_only,
                               key=key) is None:
                return None
        ticket = self.scheduler.ticket(key or uri)
        request = pipeline.infer_request(ctx, self.options, num_candidates, rid, document=uri)
        cache_key = request.cache_key()
        texts, source, job = self.result_cache.get(cache_key), "cache", None
        joinable = self.speculations.joinable(cache_key) if texts is None else None
        if joinable is not None:   # computed ahead for exactly this hole: join it
            texts, source = await asyncio.shield(joinable), "speculation"
            if ticket.stale:
                return None
        if texts is not None:
            self.scheduler.release(ticket)
        if texts is None:
            job = await self._decode(request, ticket, debounce_ms, ctx, (uri, version, start, end), on_partial)
            if job is None:
                return None
            texts, source = job.candidates(), "model"
            self.result_cache.put(cache_key, texts, uri)
        t_post = time.perf_counter()
        if num_candidates > 1:   # invoked: the greedy suggestion computed before (if any) stays first
            texts = (self.result_cache.get(pipeline.infer_request(ctx, self.options, 1).cache_key()) or []) + texts
        items = pipeline.postprocess(texts, ctx, self.options.gate)[:num_candidates]   # greedy + sampled, distinct
        note = hidden_note(texts, self.options.gate) if not items else None
        if note:
            log.info("[%s] %s %s", rid, uri, note)
        post_s = time.perf_counter() - t_post
        steps = job.num_steps if job else 0
        if on_partial is not None:
            on_partial(PartialEvent(uri, version, start, end, items[0] if items else "", steps, steps, 0, True, rid))
        log.debug("[%s] %s %s hole: %d item(s) from %s after %d steps", rid, uri, ctx.kind, len(items), source, steps)
        return CompletionResult(uri, version, start, end, items, source=source, kind=ctx.kind, request_id=rid,
                                model_s=job.model_s if job else 0.0, prepare_s=job.prepare_s if job else 0.0,
                                post_s=post_s, cpu_s=job.prepare_cpu_s if job else 0.0, note=note or "")

    async def _decode(self, request: InferRequest, ticket, debounce_ms: int, ctx: CompletionContext,
                      where: tuple[str, int, Pos, Pos], on_partial: OnPartial) -> Optional[pipeline.InfillJob]:
        """Stage 3 on the worker, one step at a time: None when superseded or the document moved on."""
        uri, version, start, end = where
        self.scheduler.supersede(f"speculate:{uri}")   # a real request goes first
        lm = self.model
        made: list[pipeline.InfillJob] = []

        def make_job() -> pipeline.InfillJob:
            made.append(pipeline.infer(lm, request))
            return made[-1]

        def on_step(p: pipeline.Partial) -> None:
            if on_partial is not None and not p[4]:
                prefix = pipeline.partial_text(made[-1].prefix(self.options.gate), ctx)
                on_partial(PartialEvent(uri, version, start, end, pipeline.partial_text(p[0], ctx), p[1], p[2], p[3],
                                        False, request.request_id, prefix))

        def stale() -> bool:   # the document changed or closed: this hole no longer exists
            current = self.docs.get(uri)
            return current is None or current.version != version

        try:
            job = await self.scheduler.run(ticket, make_job, on_step, debounce_ms, abort=stale)
        except RemoteUnavailable as exc:   # down, slow or garbage: an empty answer and one status line
            if str(exc) != self.remote_error:
                log.warning("[%s] %s", request.request_id, exc)
            self.remote_error = str(exc)
            return None
        if job is not None and self.remote_error:
            log.info("[%s] remote engine answers again", request.request_id)
            self.remote_error = ""
        return job

    async def _speculate(self, doc: Document, version: int, ctx: CompletionContext, item: str) -> None:
        """Compute, on the idle worker, the completion at the end of `item` in the text where it was accepted.

        Starts after the response has gone out. The context is built on the event loop like every
        request's, from a fork of the document (an incremental parse). The run yields to any real
        request (superseded within one step) and stops when the document moves away from both the
        text it saw and the accepted text.
        """
        await asyncio.sleep(0)
        uri = doc.uri
        if self.docs.get(uri) is not doc or doc.version != version or not self.ready:
            return
        seen = doc.text
        accepted = doc.fork(ctx.start, ctx.end, item)
        request = pipeline.infer_request(self.context(accepted, ctx.start + len(item)), self.options, 1,
                                         self.next_id("s"), document=uri)
        key = request.cache_key()
        if self.result_cache.get(key) is not None:
            return
        done = self.speculations.start(key, uri, 2 * len(accepted.text))
        if done is None:   # already running, or as many runs as the bound allows
            return
        ticket = self.scheduler.ticket(f"speculate:{uri}")
        lm = self.model

        def diverged() -> bool:
            current = self.docs.get(uri)
            return current is None or (current.text != seen and current.text != accepted.text)

        texts = None
        try:
            job = await self.scheduler.run(ticket, lambda: pipeline.infer(lm, request), lambda _partial: None, 0,
                                           abort=diverged, background=True)
            if job is not None:
                texts = job.candidates()
                self.result_cache.put(key, texts, uri)
                log.debug("[%s] speculated the completion after accepting %r: %r", request.request_id, item[:40],
                          texts[:1])
        except RemoteUnavailable as exc:   # the next real request reports it
            log.debug("[%s] speculation on the remote engine failed: %s", request.request_id, exc)
        except Exception:   # a background run never surfaces; the real request computes it again
            log.exception("[%s] speculative completion failed", request.request_id)
        finally:
            self.speculations.finish(key, texts)

    def _background(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def record_shown(self, result: CompletionResult) -> None:
        """Give the result's items ids (their `coda.accepted` argument); the statistics count them as shown."""
        o, m = self.options, self.model
        self.stats.mode = o.stats
        settings = f"minConfidence={o.min_confidence:g} minShownConfidence={o.min_shown_confidence:g}"
        result.ids = self.stats.show(result.uri, result.items, latency_ms=1000 * result.total_s,
                                     model=m.path.name if hasattr(m, "path") else getattr(m, "url", "?"),
                                     settings=settings,
                                     type_through=result.source == "type-through")

    def shutdown(self) -> None:
        self.stats.close()
        self.scheduler.shutdown()
