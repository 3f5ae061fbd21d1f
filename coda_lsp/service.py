"""The completion service: documents + context + scheduler + engine + post-processing, no LSP types.

`CompletionService` is what the protocol handlers call. It owns the open documents, the model
(loaded in the background: `load()`), the scheduler and the caches, and turns "complete at this
position" / "fill this range" into items (text + replace range) and per-step `PartialEvent`s.
After each completion it speculates, as llama.vim and Tabby do: it computes in the background the
completion that follows accepting the first item, so the request that comes after Tab is answered
from the result cache (or joins the speculation still running) instead of waiting for the model.
torch and the engine are imported only inside `load_engine`, on the worker thread, so the server
answers `initialize` before torch is even imported.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from coda_model import default_model_path

from coda_lsp.context import CompletionContext, ContextConfig, build_context
from coda_lsp.documents import Document, DocumentStore, Pos
from coda_lsp.options import ServerOptions
from coda_lsp.postprocess import PostContext, postprocess, unify_newlines
from coda_lsp.cache_limits import CacheLimits, CacheSet
from coda_lsp.scheduler import ResultCache, Scheduler, Speculations, TypeThroughCache

log = logging.getLogger(__name__)


class ModelUnavailable(Exception):
    """No model can be loaded; the message says what to pass."""


def default_model_dir() -> Path:
    return default_model_path()


def resolve_model_path(path: Optional[str]) -> Path:
    """The model directory to load: `path`, else the embedded default model (which may be missing)."""
    if path:
        p = Path(path).expanduser()
        if not p.is_dir():   # checked before importing torch: a typo costs no start-up time
            raise ModelUnavailable(f"model directory {p} does not exist: pass --model PATH (or "
                                   "initializationOptions.modelPath) to a CoDA model directory")
        return p
    default = default_model_dir()
    if not (default / "config.json").is_file():
        raise ModelUnavailable(f"no embedded default model in this install ({default} is empty): "
                               "pass --model PATH (or initializationOptions.modelPath) to a CoDA model directory")
    return default


@dataclass
class LoadedEngine:
    engine: Any                 # coda_model.engine.Engine
    tokenizer: Any              # coda_model.tokenizer.CodaTokenizer
    path: Path
    device: str
    dtype: str
    load_s: float


def cpu_threads(requested: Optional[int]) -> int:
    """Threads for the model's CPU ops: the setting, else OMP_NUM_THREADS, else half the cores.

    Why not every core (torch's default): an op split over all cores waits for its slowest thread, so a
    single core busy with anything else (a build, the browser, a test run) stalls every denoising step.
    Measured on a 2-core machine with one core busy: 16 steps of the default model took 0.24 s with one
    thread and 5.0 s with two. On an idle machine, two threads were only 1.5x faster than one."""
    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) // 2)


def set_cpu_threads(requested: Optional[int]) -> int:
    """Give torch `cpu_threads(requested)`; call it on the worker thread that decodes."""
    import torch
    threads = cpu_threads(requested)
    torch.set_num_threads(threads)
    return threads


def load_engine(options: ServerOptions) -> LoadedEngine:
    """Blocking: import torch + the engine and load the model (run it on the worker thread that decodes)."""
    path = resolve_model_path(options.model_path)
    t0 = time.perf_counter()
    set_cpu_threads(options.threads)
    from coda_model.checkpoint import load_model
    from coda_model.engine import Engine
    loaded = load_model(path, device=options.device, dtype=options.dtype)
    return LoadedEngine(Engine(loaded), loaded.tokenizer, path, str(loaded.device),
                        str(loaded.dtype).replace("torch.", ""), time.perf_counter() - t0)


@dataclass
class PartialEvent:
    """One denoise step of one request, ready to be sent as coda/partialCompletion."""
    uri: str
    version: int
    start: Pos
    end: Pos
    text: str
    step: int
    steps: int
    masked_count: int
    done: bool


@dataclass
class CompletionResult:
    uri: str
    version: int
    start: Pos                  # replace range of every item
    end: Pos
    items: list[str]
    source: str = "model"       # "model" | "type-through" | "cache" | "speculation" (joined a speculative run)
    kind: str = "line"
    model_s: float = 0.0        # time spent in model steps (for the overhead benchmark)
    total_s: float = 0.0
    context_s: float = 0.0      # building the context (on the event loop)
    prepare_s: float = 0.0      # tokenizing and trimming (on the worker)
    post_s: float = 0.0         # decoding the candidates and post-processing
    cpu_s: float = 0.0          # CPU time of the non-model work (event-loop thread + worker preparation)


class InfillJob:
    """One hole on the engine: tokenize, then one `engine.infill` step per `step()` call (blocking)."""

    def __init__(self, lm: LoadedEngine, ctx: CompletionContext, options: ServerOptions, num_candidates: int = 1,
                 budget: int = 1024) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        from coda_model.engine import DecodeConfig
        tok = lm.tokenizer
        extra = tok.encode(ctx.extra) if ctx.extra else []
        prefix, suffix = tok.encode(ctx.prefix), tok.encode(ctx.suffix)
        over = len(extra) + len(prefix) + len(suffix) - budget   # the char estimate was short: trim far ends
        if over > 0:
            cut = min(over, len(extra)); extra = extra[cut:]; over -= cut
            keep_pre = max(0, len(prefix) - (over + 1) // 2 - max(0, (over + 1) // 2 - len(suffix)))
            prefix = prefix[len(prefix) - keep_pre:]
            over = len(extra) + len(prefix) + len(suffix) - budget
            if over > 0:
                suffix = suffix[: max(0, len(suffix) - over)]
        self.lm, self.ctx, self.num_candidates = lm, ctx, num_candidates
        temperature = options.temperature if num_candidates == 1 else max(options.temperature, 0.7)
        self.config = DecodeConfig(steps=max(1, min(options.steps, ctx.length)), alg=options.algorithm,
                                   temperature=temperature, threshold=options.threshold, seed=0,
                                   cache=options.cache, block_length=options.block_length if options.cache != "none" else None)
        self.prompt_ids, self.suffix_ids = extra + prefix, suffix
        self._it = None
        self.state = None
        self.done = False
        self.num_steps = 0
        self.model_s = 0.0
        self.prepare_s = time.perf_counter() - t0
        self.prepare_cpu_s = time.thread_time() - c0

    def step(self) -> tuple[str, int, int, int, bool]:
        """(partial text, step, steps, masked count, done) after one more denoise step."""
        t0 = time.perf_counter()
        if self._it is None:
            self._it = iter(self.lm.engine.infill(self.prompt_ids, self.suffix_ids, length=self.ctx.length,
                                                  config=self.config, num_candidates=self.num_candidates))
        try:
            self.state = next(self._it)
            self.num_steps += 1
            self.done = bool(self.state.done)
        except StopIteration:
            self.done = True
        self.model_s += time.perf_counter() - t0
        if self.state is None:
            return "", 0, 0, 0, True
        text = self.lm.engine.hole_text(self.state, 0, partial=not self.done)
        masked = int(self.state.masked[0].sum())
        return text, self.num_steps, max(int(self.state.steps), self.num_steps), masked, self.done

    def texts(self) -> list[str]:
        if self.state is None:
            return []
        return [self.lm.engine.hole_text(self.state, c) for c in range(self.num_candidates)]


def post_context(ctx: CompletionContext) -> PostContext:
    # a replaced rest-of-line (closers) still counts as what follows the hole: it is re-appended below
    line_suffix = ctx.replaced + ctx.line_suffix if ctx.kind == "line" else ctx.line_suffix
    return PostContext(kind=ctx.kind, line_prefix=ctx.line_prefix, line_suffix=line_suffix, suffix=ctx.suffix,
                       indent=ctx.indent, indent_unit=ctx.indent_unit)


def clean_items(texts: list[str], ctx: CompletionContext) -> list[str]:
    """Post-process every candidate, drop empty ones and duplicates (order kept).

    For a line hole whose range covers closers at the end of the line, the item keeps those closers
    (the post-processing already removed the ones the model repeated), so accepting never loses them.
    """
    pctx, out = post_context(ctx), []
    for text in texts:
        cleaned = postprocess(text, pctx)
        if cleaned is None:
            continue
        if ctx.kind == "line" and ctx.replaced:
            cleaned += ctx.replaced
        if cleaned not in out:
            out.append(cleaned)
    return out


@dataclass
class CompletionService:
    options: ServerOptions = field(default_factory=ServerOptions)
    docs: DocumentStore = field(default_factory=DocumentStore)
    scheduler: Scheduler = field(default_factory=Scheduler)
    limits: CacheLimits = field(default_factory=CacheLimits)
    model: Optional[LoadedEngine] = None
    state: str = "loading"                  # loading | ready | error
    message: str = ""
    background: set = field(default_factory=set)   # running speculation / settings tasks (kept referenced)

    def __post_init__(self) -> None:
        lim = self.limits
        self.type_cache = TypeThroughCache(lim.type_through_entries, lim.type_through_bytes)
        self.result_cache = ResultCache(lim.result_entries, lim.result_bytes)
        self.speculations = Speculations(lim.speculations)   # by result key
        self.caches = CacheSet(type_through=self.type_cache, result=self.result_cache, speculations=self.speculations)

    def close(self, uri: str) -> None:
        """didClose: the document and everything kept for it (cache entries, speculations, requests) go."""
        self.docs.close(uri)
        self.caches.drop(uri)
        self.scheduler.forget([uri, f"fill:{uri}", f"speculate:{uri}"])

    def stats(self) -> dict[str, Any]:
        """Sizes against bounds, for `coda/stats`."""
        return {"caches": self.caches.stats(), "documents": self.docs.stats(),
                "in_flight": {"tickets": len(self.scheduler), "background_tasks": len(self.background)}}

    # --- model ---------------------------------------------------------------------------------------
    async def load(self) -> None:
        """Load the model on the worker thread; sets `state`/`message` (never raises)."""
        self.state, self.message = "loading", f"loading {self.options.model_path or 'the default model'}"
        try:
            self.model = await self.scheduler.call(load_engine, self.options)
        except Exception as exc:   # ModelUnavailable, ModelLoadError, ImportError of the engine, ...
            self.model = None
            self.state, self.message = "error", f"model not loaded: {exc}"
            log.error("%s", self.message)
            return
        m = self.model
        self.state, self.message = "ready", f"model {m.path.name} on {m.device} ({m.dtype}), loaded in {m.load_s:.1f}s"
        log.info("%s", self.message)

    def apply_threads(self) -> None:
        """A changed `threads` setting takes effect on the worker thread, without reloading the model."""
        task = asyncio.get_running_loop().create_task(self.scheduler.call(set_cpu_threads, self.options.threads))
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    @property
    def ready(self) -> bool:
        return self.model is not None and self.state == "ready"

    def context_config(self, opts: Optional[ServerOptions] = None) -> ContextConfig:
        o = opts or self.options
        return ContextConfig(context_tokens=o.context_tokens, max_tokens=o.max_tokens,
                             line_tokens=min(24, o.max_tokens))

    def context(self, doc: Document, start: int, end: Optional[int] = None) -> CompletionContext:
        return build_context(doc, start, end, others=self.docs.others(doc.uri, doc.language),
                             cfg=self.context_config())

    # --- requests ------------------------------------------------------------------------------------
    async def complete(self, uri: str, pos: Pos, *, invoked: bool = False,
                       on_partial: Optional[Callable[[PartialEvent], None]] = None) -> Optional[CompletionResult]:
        """Items for the hole at `pos`, or None (not ready, unknown document, superseded, nothing useful)."""
        t0, c0 = time.perf_counter(), time.thread_time()
        doc = self.docs.get(uri)
        if doc is None or doc.binary or not self.options.language_enabled(doc.language):
            return None
        cursor = doc.offset_at(pos)
        hit = self.type_cache.get(uri, doc.text, cursor)
        if hit is not None:
            items, replace_len = hit
            return CompletionResult(uri, doc.version, doc.position_at(cursor),
                                    doc.position_at(min(len(doc.text), cursor + replace_len)), items[:3 if invoked else 1],
                                    source="type-through", total_s=time.perf_counter() - t0)
        if not self.ready:
            return None
        t1 = time.perf_counter()
        ctx = self.context(doc, cursor)
        context_s = time.perf_counter() - t1
        result = await self._run(doc, ctx, num_candidates=3 if invoked else 1,
                                 debounce_ms=0 if invoked else self.options.debounce_ms, on_partial=on_partial)
        if result is not None:
            self.type_cache.put(uri, doc.text, ctx.start, ctx.end, result.items)
            result.total_s = time.perf_counter() - t0
            result.context_s = context_s
            result.cpu_s += time.thread_time() - c0
            if result.items and self.options.speculate:
                task = asyncio.ensure_future(self._speculate(doc, result.version, ctx, result.items[0]))
                self.background.add(task)
                task.add_done_callback(self.background.discard)
        return result

    async def fill(self, uri: str, start: Pos, end: Pos, *,
                   on_partial: Optional[Callable[[PartialEvent], None]] = None) -> Optional[CompletionResult]:
        """The rewrite of the range [start, end) (a selection), or None."""
        doc = self.docs.get(uri)
        if doc is None or doc.binary or not self.ready:
            return None
        a, b = sorted((doc.offset_at(start), doc.offset_at(end)))
        if a == b:
            return await self.complete(uri, start, invoked=True, on_partial=on_partial)
        ctx = self.context(doc, a, b)
        return await self._run(doc, ctx, num_candidates=1, debounce_ms=0, on_partial=on_partial, key=f"fill:{uri}")

    async def _run(self, doc: Document, ctx: CompletionContext, *, num_candidates: int, debounce_ms: int,
                   on_partial: Optional[Callable[[PartialEvent], None]], key: Optional[str] = None
                   ) -> Optional[CompletionResult]:
        uri, version = doc.uri, doc.version
        start, end = doc.position_at(ctx.start), doc.position_at(ctx.end)
        ticket = self.scheduler.ticket(key or uri)
        lm = self.model
        budget = self.options.context_tokens

        def make_job() -> InfillJob:
            return InfillJob(lm, ctx, self.options, num_candidates, budget)

        def on_step(p: tuple[str, int, int, int, bool]) -> None:
            if on_partial is not None and not p[4]:
                text = unify_newlines(p[0])
                text = text.split("\n", 1)[0] if ctx.single_line else text
                on_partial(PartialEvent(uri, version, start, end, text, p[1], p[2], p[3], False))

        cache_key = self._result_key(ctx, num_candidates)
        texts = self.result_cache.get(cache_key)
        job: Optional[InfillJob] = None
        source = "cache"
        joinable = self.speculations.joinable(cache_key) if texts is None else None
        if joinable is not None:   # computed ahead for exactly this hole: join it
            texts = await asyncio.shield(joinable)
            source = "speculation"
            if ticket.stale:
                return None
        if texts is not None:
            self.scheduler.release(ticket)
        if texts is None:
            self.scheduler.supersede(f"speculate:{uri}")   # a real request goes first
            def stale() -> bool:   # the document changed or closed: this hole no longer exists
                current = self.docs.get(uri)
                return current is None or current.version != version
            job = await self.scheduler.run(ticket, make_job, on_step, debounce_ms, abort=stale)
            if job is None:
                return None
            t_post = time.perf_counter()
            texts = job.texts()
            self.result_cache.put(cache_key, texts, uri)
        else:
            t_post = time.perf_counter()
        items = clean_items(texts, ctx)
        post_s = time.perf_counter() - t_post
        if on_partial is not None:
            steps = job.num_steps if job else 0
            on_partial(PartialEvent(uri, version, start, end, items[0] if items else "", steps, steps, 0, True))
        return CompletionResult(uri, version, start, end, items, source="model" if job else source, kind=ctx.kind,
                                model_s=job.model_s if job else 0.0, prepare_s=job.prepare_s if job else 0.0,
                                post_s=post_s, cpu_s=job.prepare_cpu_s if job else 0.0)

    def _result_key(self, ctx: CompletionContext, num_candidates: int) -> str:
        """The exact model input and decode settings: equal keys give equal items."""
        o = self.options
        return ResultCache.key(ctx.extra, ctx.prefix, ctx.suffix, ctx.kind, ctx.length, num_candidates,
                               o.model_path, o.steps, o.algorithm, o.temperature, o.threshold, o.cache, o.block_length,
                               o.context_tokens)

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
        spec_ctx = self.context(accepted, ctx.start + len(item))
        key = self._result_key(spec_ctx, 1)
        if self.result_cache.get(key) is not None:
            return
        done = self.speculations.start(key, uri, 2 * len(accepted.text))
        if done is None:   # already running, or as many runs as the bound allows
            return
        ticket = self.scheduler.ticket(f"speculate:{uri}")
        lm, opts = self.model, self.options

        def diverged() -> bool:
            current = self.docs.get(uri)
            return current is None or (current.text != seen and current.text != accepted.text)

        texts = None
        try:
            job = await self.scheduler.run(ticket, lambda: InfillJob(lm, spec_ctx, opts, 1, opts.context_tokens),
                                           lambda _partial: None, 0, abort=diverged, background=True)
            if job is not None:
                texts = job.texts()
                self.result_cache.put(key, texts, uri)
                log.debug("speculated the completion after accepting %r: %r", item[:40], texts[:1])
        except Exception:   # a background run never surfaces; the real request computes it again
            log.exception("speculative completion failed")
        finally:
            self.speculations.finish(key, texts)

    def shutdown(self) -> None:
        self.scheduler.shutdown()
