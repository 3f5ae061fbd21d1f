"""Fill a selection: `workspace/executeCommand coda.fillSelection [{uri, range}]` and its code action.

Partials stream (when enabled) while the selection denoises; then one `workspace/applyEdit`, unless
the document changed meanwhile, in which case nothing is applied and the client is told why.
"""

from __future__ import annotations

import logging
from typing import Any

from lsprotocol import types

from coda_lsp.handlers.convert import pos_in, range_out, raw_range
from coda_lsp.streaming import FILL_SELECTION, lsp_range

log = logging.getLogger(__name__)


def register(server) -> None:
    @server.command(FILL_SELECTION)
    async def fill_selection(ls, *args: Any) -> dict:
        arg = args[0] if args and isinstance(args[0], dict) else None
        rng = raw_range(arg.get("range")) if arg else None
        uri = arg.get("uri") if arg else None
        if not isinstance(uri, str) or rng is None:
            ls.show(f"{FILL_SELECTION} needs arguments [{{uri, range}}], got {list(args)!r:.200}")
            return {"applied": False, "reason": "bad arguments: expected [{uri, range}]"}
        service, busy = ls.service, ls.service.ready
        if busy:
            ls.send_status("busy")
        try:
            outcome = await service.fill_selection(uri, rng[0], rng[1],
                                                   on_partial=ls.send_partial if service.options.streaming else None)
        finally:
            if busy:
                ls.send_status("ready")
        if outcome.text is None:
            if outcome.notify:
                ls.show(f"{uri}: {outcome.reason}: nothing applied, run the command again")
            return {"applied": False, "reason": outcome.reason}
        edit = types.WorkspaceEdit(changes={uri: [types.TextEdit(range=range_out(outcome.start, outcome.end),
                                                                  new_text=outcome.text)]})
        resp = await ls.workspace_apply_edit_async(types.ApplyWorkspaceEditParams(edit=edit, label="coda: fill selection"))
        return {"applied": bool(resp.applied), "text": outcome.text, "range": lsp_range(outcome.start, outcome.end)}

    @server.feature(types.TEXT_DOCUMENT_CODE_ACTION,
                    types.CodeActionOptions(code_action_kinds=[types.CodeActionKind.RefactorRewrite]))
    def code_action(ls, params: types.CodeActionParams) -> list[types.CodeAction]:
        r = params.range
        if (r.start.line, r.start.character) == (r.end.line, r.end.character):
            return []
        if ls.service.docs.get(params.text_document.uri) is None:
            return []
        arg = {"uri": params.text_document.uri, "range": lsp_range(pos_in(r.start), pos_in(r.end))}
        return [types.CodeAction(title="Fill selection with CoDA", kind=types.CodeActionKind.RefactorRewrite,
                                 command=types.Command(title="Fill selection with CoDA", command=FILL_SELECTION,
                                                       arguments=[arg]))]
