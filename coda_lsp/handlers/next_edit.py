"""`coda/nextEdit` and `textDocument/copilotInlineEdit`: the edits an edit implies elsewhere in the window.

Both take Copilot's shape, `{textDocument: {uri, version}, position}` (plus our optional `invoked:
true` when the user asked by a key), and answer `{edits: [{range, text, textDocument, command}]}`;
each edit's command is `coda.accepted [id]`, the dismiss key sends `coda.rejected [id]`. A request
for a version the document has left, or any input the stage cannot use, gets `{edits: []}` and one
`coda/status` line saying why.
"""

from __future__ import annotations

import logging
from typing import Any

from coda_lsp.documents import Pos
from coda_lsp.streaming import ACCEPTED, REJECTED, lsp_range

log = logging.getLogger(__name__)
NEXT_EDIT = "coda/nextEdit"
COPILOT_INLINE_EDIT = "textDocument/copilotInlineEdit"


def _get(obj: Any, key: str) -> Any:
    """A field of params that pygls passes as a dict or as an attribute object (custom methods)."""
    if isinstance(obj, dict):
        return obj.get(key)
    return getattr(obj, key, None)


def parse_params(params: Any) -> tuple[str, Pos, Any, bool] | str:
    """(uri, position, version or None, invoked), or why the params are unusable."""
    td, pos = _get(params, "textDocument"), _get(params, "position")
    uri = _get(td, "uri") if td is not None else None
    try:
        p = Pos(int(_get(pos, "line")), int(_get(pos, "character")))
    except (TypeError, ValueError):
        return "next edit needs {textDocument: {uri, version}, position: {line, character}}"
    if not isinstance(uri, str) or p.line < 0 or p.character < 0:
        return "next edit needs {textDocument: {uri, version}, position: {line, character}}"
    return uri, p, _get(td, "version"), bool(_get(params, "invoked"))


async def next_edit(ls, params: Any) -> dict:
    parsed = parse_params(params)
    if isinstance(parsed, str):
        ls.send_status("ready" if ls.service.ready else ls.service.state, parsed)
        return {"edits": []}
    uri, pos, version, invoked = parsed
    doc = ls.service.docs.get(uri)
    if doc is not None and version is not None and version != doc.version:
        ls.send_status("ready", f"next edit for version {version} of {uri}, which is at {doc.version}: dropped")
        return {"edits": []}
    ls.status_busy()
    note = None
    try:
        result = await ls.next_edits.suggest(uri, pos, invoked=invoked)
        note = result.note or None
        log.debug("[%s] next edit %s %d:%d v%s: %d edit(s)%s", result.request_id, uri, pos.line, pos.character,
                  version, len(result.edits), f" ({note})" if note else "")
        ls.next_edits.record_shown(result)
    finally:
        ls.status_after_run(note)
    td = {"uri": uri, "version": result.version}
    return {"edits": [{"range": lsp_range(e.start, e.end), "text": e.text, "textDocument": td,
                       "confidence": round(e.confidence, 4),   # ours (Copilot's shape has none): for clients, benchmarks
                       "command": {"title": "coda next edit accepted", "command": ACCEPTED, "arguments": [sid]}}
                      for e, sid in zip(result.edits, result.ids)]}


def _quiet(method: str):
    def handler(ls, params: Any) -> None:
        log.debug("%s: noted", method)
    return handler


def register(server) -> None:
    server.feature(NEXT_EDIT)(next_edit)
    server.feature(COPILOT_INLINE_EDIT)(next_edit)

    # Copilot's clients (copilot-lsp, sidekick.nvim) also send these; accepted quietly, nothing to do
    for method in ("textDocument/didShowInlineEdit", "textDocument/didFocus"):
        server.feature(method)(_quiet(method))

    @server.command(REJECTED)
    def rejected(ls, *args: Any) -> bool:
        sid = args[0] if args and isinstance(args[0], str) else None
        if sid is None or not ls.service.stats.rejected(sid):
            log.debug("%s with unknown or bad arguments %r: ignored", REJECTED, list(args)[:1])
            return False
        return True
