"""Document sync: didOpen / didChange (full and incremental) / didClose into the service's store."""

from __future__ import annotations

import logging

from lsprotocol import types

from coda_lsp.documents import MAX_PARSE_CHARS
from coda_lsp.handlers.convert import change_in

log = logging.getLogger(__name__)


def register(server) -> None:
    @server.feature(types.TEXT_DOCUMENT_DID_OPEN)
    def did_open(ls, params: types.DidOpenTextDocumentParams) -> None:
        d = params.text_document
        doc = ls.service.docs.open(d.uri, d.text, d.version, d.language_id)
        if doc.binary:
            log.warning("%s looks binary (NUL bytes): no completions for it", d.uri)
        elif len(doc.text) > MAX_PARSE_CHARS:
            log.info("%s is large (%d chars): line-based context, no syntax tree", d.uri, len(doc.text))

    @server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
    def did_change(ls, params: types.DidChangeTextDocumentParams) -> None:
        td = params.text_document
        before = ls.service.docs.get(td.uri)
        old = before.text if before is not None else None
        doc = ls.service.docs.change(td.uri, [change_in(c) for c in params.content_changes], td.version)
        if doc is not None and old is not None:
            ls.next_edits.note_change(td.uri, old, doc.text)   # where the user's latest edit is

    @server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
    def did_close(ls, params: types.DidCloseTextDocumentParams) -> None:
        ls.service.close(params.text_document.uri)
        ls.next_edits.drop(params.text_document.uri)
