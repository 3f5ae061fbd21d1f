"""textDocument/inlineCompletion (LSP 3.18) and the textDocument/completion fallback.

The fallback is only registered for clients that do not declare inline-completion support, so
editors with ghost text never run the model twice per keystroke.
"""

from __future__ import annotations

import logging
from typing import Optional

from lsprotocol import types

from coda_lsp.handlers.convert import pos_in, range_out
from coda_lsp.pipeline import CompletionResult

log = logging.getLogger(__name__)


async def run_completion(ls, uri: str, position: types.Position, invoked: bool) -> Optional[CompletionResult]:
    """Call the service with status and (opt-in) partial notifications around the model run."""
    service = ls.service
    on_partial = ls.send_partial if service.options.streaming else None
    if service.ready:
        ls.send_status("busy")
    try:
        result = await service.complete(uri, pos_in(position), invoked=invoked, on_partial=on_partial)
        if result is None:
            log.debug("completion %s %d:%d invoked=%s: no result", uri, position.line, position.character, invoked)
        else:
            log.debug("[%s] completion %s %d:%d invoked=%s: %s %s hole, %d item(s) in %.0f ms (model %.0f ms) %r",
                      result.request_id, uri, position.line, position.character, invoked, result.source, result.kind,
                      len(result.items), 1000 * result.total_s, 1000 * result.model_s, result.items[:1])
        return result
    finally:
        if service.ready and service.scheduler.active == 0:
            ls.send_status("ready")


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
    async def inline_completion(ls, params: types.InlineCompletionParams) -> types.InlineCompletionList:
        ctx = params.context
        invoked = ctx is not None and ctx.trigger_kind == types.InlineCompletionTriggerKind.Invoked
        result = await run_completion(ls, params.text_document.uri, params.position, invoked)
        if result is None:
            return types.InlineCompletionList(items=[])
        rng = range_out(result.start, result.end)
        return types.InlineCompletionList(items=[types.InlineCompletionItem(insert_text=text, range=rng)
                                                 for text in result.items])

    async def completion(ls, params: types.CompletionParams) -> types.CompletionList:
        result = await run_completion(ls, params.text_document.uri, params.position, invoked=False)
        if result is None:
            return types.CompletionList(is_incomplete=True, items=[])
        rng = range_out(result.start, result.end)
        items = [types.CompletionItem(label=text.strip().split("\n", 1)[0][:60] or "coda", detail="coda (diffusion)",
                                      kind=types.CompletionItemKind.Text, sort_text="0",
                                      filter_text=text, text_edit=types.TextEdit(range=rng, new_text=text))
                 for text in result.items]
        return types.CompletionList(is_incomplete=True, items=items)

    server.completion_fallback = completion


def register_completion_fallback(server) -> None:
    """Advertise textDocument/completion (called from initialize for clients without inline completion)."""
    server.feature(types.TEXT_DOCUMENT_COMPLETION,
                   types.CompletionOptions(trigger_characters=[".", "(", " "]))(server.completion_fallback)
