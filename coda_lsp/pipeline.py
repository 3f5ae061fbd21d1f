"""A completion request as four named stages on plain data (llm-ls names them the same way):

    should_complete(doc, options)          -> None, or why not to complete here
    build_context(doc, start, end, ...)    -> CompletionContext: prefix / suffix / hole shape within the budget
    infer(lm, InferRequest)                -> InfillJob: the decode, one denoise step per `job.step()`
    postprocess(candidates, ctx, gate)     -> the items an editor shows (confidence gate, cleaned, de-duplicated)

`run_once` chains them synchronously; `coda-lsp complete / fill` and the benchmarks call it. The server
(`coda_lsp.service`) calls the same four functions, with the scheduler (debounce, cancellation, one
model at a time) around `infer` and its caches around the whole. Nothing here imports pygls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Sequence

from coda_model.decode_config import DecodeConfig

from coda_lsp import context as context_mod
from coda_lsp.context import CompletionContext, ContextConfig
from coda_lsp.documents import Document, Pos
from coda_lsp.gate import Candidate, GateConfig, cut, gated_text
from coda_lsp.loading import LoadedEngine
from coda_lsp.options import ServerOptions
from coda_lsp.postprocess import PostContext, unify_newlines
from coda_lsp.scheduler import ResultCache

Partial = tuple[str, int, int, int, bool]   # (text so far, step, steps, masked count, done)


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
    request_id: str = ""
    prefix: str = ""            # what Tab accepts while it streams (InfillJob.prefix)


@dataclass
class CompletionResult:
    uri: str
    version: int
    start: Pos                  # replace range of every item
    end: Pos
    items: list[str]
    source: str = "model"       # "model" | "type-through" | "cache" | "speculation" (joined a speculative run)
    kind: str = "line"
    request_id: str = ""
    model_s: float = 0.0        # time spent in model steps (for the overhead benchmark)
    total_s: float = 0.0
    context_s: float = 0.0      # building the context (on the event loop)
    prepare_s: float = 0.0      # tokenizing and trimming (on the worker)
    post_s: float = 0.0         # decoding the candidates and post-processing
    cpu_s: float = 0.0          # CPU time of the non-model work (event-loop thread + worker preparation)
    ids: list[str] = field(default_factory=list)   # one per item (service.record_shown): `coda.accepted`'s argument
    note: str = ""              # why nothing is shown (the confidence gate hid every candidate), for coda/status


# ------------------------------------------------------------------------------------- 1. should_complete
def should_complete(doc: Optional[Document], options: ServerOptions) -> Optional[str]:
    """None when a completion may run for `doc`; otherwise the reason (for the log)."""
    if doc is None:
        return "unknown document"
    if doc.binary:
        return "binary document"
    if not options.language_enabled(doc.language):
        return f"language {doc.language!r} not enabled"
    return None


# ------------------------------------------------------------------------------------- 2. build_context
def context_config(options: ServerOptions) -> ContextConfig:
    return ContextConfig(context_tokens=options.context_tokens, max_tokens=options.max_tokens)


def build_context(doc: Document, start: int, end: Optional[int], options: ServerOptions,
                  others: Sequence[Document] = ()) -> CompletionContext:
    """The hole at [start, end) (end None = a cursor) and what the model sees around it."""
    return context_mod.build_context(doc, start, end, others=others, cfg=context_config(options))


# ------------------------------------------------------------------------------------- 3. infer
@dataclass(frozen=True)
class InferRequest:
    """Everything the decode depends on, as plain data: equal requests give equal texts."""
    request_id: str
    extra: str                  # commented context placed before the prefix
    prefix: str
    suffix: str
    length: int                 # mask tokens
    num_candidates: int
    decode: DecodeConfig        # already adapted to this hole (`decode_for`)
    context_tokens: int         # token budget for extra + prefix + suffix
    model: str = ""             # which model decodes (part of the result-cache key)
    document: str = ""          # where the decode's context K/V are kept between requests ("" = nowhere)

    def cache_key(self) -> str:
        return ResultCache.key(self.extra, self.prefix, self.suffix, self.length, self.num_candidates,
                               self.decode.key(), self.context_tokens, self.model)


def decode_for(decode: DecodeConfig, length: int, num_candidates: int) -> DecodeConfig:
    """The server's decode for one hole: steps within the hole, blocks only with a cache, and some
    temperature when several candidates are asked for (greedy rows would all be the same)."""
    return replace(decode, steps=max(1, min(decode.steps, length)),
                   temperature=decode.temperature if num_candidates == 1 else max(decode.temperature, 0.7),
                   block_length=decode.block_length if decode.cache != "none" else None)


def infer_request(ctx: CompletionContext, options: ServerOptions, num_candidates: int,
                  request_id: str = "", document: str = "") -> InferRequest:
    return InferRequest(request_id, ctx.extra, ctx.prefix, ctx.suffix, ctx.length, num_candidates,
                        decode_for(options.decode, ctx.length, num_candidates), options.context_tokens,
                        options.model_path or "", document)


def fit_budget(extra: list[int], prefix: list[int], suffix: list[int], budget: int
               ) -> tuple[list[int], list[int], list[int]]:
    """Trim the far ends when the context's character estimate was short: extra first, then both sides."""
    over = len(extra) + len(prefix) + len(suffix) - budget
    if over <= 0:
        return extra, prefix, suffix
    cut = min(over, len(extra))
    extra = extra[cut:]
    over -= cut
    keep_pre = max(0, len(prefix) - (over + 1) // 2 - max(0, (over + 1) // 2 - len(suffix)))
    prefix = prefix[len(prefix) - keep_pre:]
    over = len(extra) + len(prefix) + len(suffix) - budget
    if over > 0:
        suffix = suffix[: max(0, len(suffix) - over)]
    return extra, prefix, suffix


class InfillJob:
    """One hole on the local engine: tokenize, then one `engine.infill` step per `step()` call (blocking)."""

    def __init__(self, lm: LoadedEngine, request: InferRequest) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        tok = lm.tokenizer
        extra = tok.encode(request.extra) if request.extra else []
        extra, prefix, suffix = fit_budget(extra, tok.encode(request.prefix), tok.encode(request.suffix),
                                           request.context_tokens)
        self.lm, self.request = lm, request
        self.prompt_ids, self.suffix_ids = extra + prefix, suffix
        self._it = None
        self.state = None
        self.done = False
        self.num_steps = 0
        self.model_s = 0.0
        self.prepare_s = time.perf_counter() - t0
        self.prepare_cpu_s = time.thread_time() - c0

    def step(self) -> Partial:
        """(partial text, step, steps, masked count, done) after one more denoise step."""
        t0 = time.perf_counter()
        if self._it is None:
            r = self.request
            self._it = iter(self.lm.engine.infill(self.prompt_ids, self.suffix_ids, length=r.length,
                                                  config=r.decode, num_candidates=r.num_candidates,
                                                  context=self._context_slot()))
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
        return [self.lm.engine.hole_text(self.state, c) for c in range(self.request.num_candidates)]

    def _context_slot(self):
        """The document's entry in the server's context store (the engine reuses and replaces it)."""
        store = getattr(self.lm, "contexts", None)
        if store is None or not self.request.document:
            return None
        from coda_model.context_reuse import ContextSlot
        return ContextSlot(store, self.request.document)

    def candidates(self) -> list[Candidate]:
        """Each candidate as token pieces with their confidence (what the confidence gate reads)."""
        if self.state is None:
            return []
        return [Candidate.of(self.lm.engine.hole_spans(self.state, c)) for c in range(self.request.num_candidates)]

    def prefix(self, gate: GateConfig) -> str:
        """Candidate 0's decoded text before its first still-masked token, cut by the gate's minConfidence.

        What a Tab accepts while the hole still streams: revealed tokens after a masked one may still
        change meaning, the ones before it will not."""
        if self.state is None:
            return ""
        masked = self.state.masked[0]
        k = int(masked.nonzero()[0]) if bool(masked.any()) else int(masked.numel())
        head = replace(self.state, tokens=self.state.tokens[:, :k], masked=masked[None, :k],
                       confidence=self.state.confidence[:, :k])
        return cut(Candidate.of(self.lm.engine.hole_spans(head, 0)), gate.min_confidence)[0]


def infer(lm: LoadedEngine, request: InferRequest) -> InfillJob:
    """Open the decode of one request (tokenization happens here, on the caller's thread). `lm` may be a
    remote engine (`coda_lsp.http.remote.RemoteEngine`): its job has the same interface."""
    if not isinstance(lm, LoadedEngine):
        return lm.open(request)
    return InfillJob(lm, request)


# ------------------------------------------------------------------------------------- 4. postprocess
def post_context(ctx: CompletionContext) -> PostContext:
    # a replaced rest-of-line (closers) still counts as what follows the hole: it is re-appended below
    line_suffix = ctx.replaced + ctx.line_suffix if ctx.kind == "line" else ctx.line_suffix
    return PostContext(kind=ctx.kind, line_prefix=ctx.line_prefix, line_suffix=line_suffix, suffix=ctx.suffix,
                       indent=ctx.indent, indent_unit=ctx.indent_unit)


def postprocess(candidates: Sequence[Candidate | str], ctx: CompletionContext,
                gate: GateConfig = GateConfig()) -> list[str]:
    """The confidence gate, then the clean-up chain, on every candidate; empty ones and duplicates dropped.

    A plain string is a candidate with no confidences (never cut or hidden). For a line hole whose
    range covers closers at the end of the line, the item keeps those closers (the post-processing
    already removed the ones the model repeated), so accepting never loses them.
    """
    pctx, out = post_context(ctx), []
    for cand in candidates:
        cleaned = gated_text(Candidate.sure(cand) if isinstance(cand, str) else cand, pctx, gate)
        if cleaned is None:
            continue
        if ctx.kind == "line" and ctx.replaced:
            cleaned += ctx.replaced
        if cleaned not in out:
            out.append(cleaned)
    return out


def partial_text(text: str, ctx: CompletionContext) -> str:
    """What a streaming client draws for a step: one line for a line hole."""
    text = unify_newlines(text)
    return text.split("\n", 1)[0] if ctx.single_line else text


# ------------------------------------------------------------------------------------- all four
def run_once(lm: LoadedEngine, doc: Document, start: int, end: Optional[int], options: ServerOptions, *,
             others: Sequence[Document] = (), num_candidates: int = 1,
             on_step: Optional[Callable[[Partial], None]] = None) -> tuple[CompletionContext, list[str]]:
    """The four stages, synchronously (no scheduler, no caches): what the server computes for this hole."""
    reason = should_complete(doc, options)
    if reason is not None:
        raise ValueError(f"no completion here: {reason}")
    ctx = build_context(doc, start, end, options, others)
    job = infer(lm, infer_request(ctx, options, num_candidates))
    while not job.done:
        partial = job.step()
        if on_step is not None:
            on_step(partial)
    return ctx, postprocess(job.candidates(), ctx, options.gate)
