"""initialize / initialized / didChangeConfiguration / shutdown: settings and the background model load."""

from __future__ import annotations

import logging

from lsprotocol import types

from coda_lsp.options import merge_options

log = logging.getLogger(__name__)


def register(server) -> None:
    @server.feature(types.INITIALIZE)
    def initialize(ls, params: types.InitializeParams) -> None:
        options, warnings = merge_options(ls.base_options, params.initialization_options)
        ls.service.options = options
        encoding = ls.workspace.position_encoding or "utf-16"
        ls.service.docs.encoding = str(getattr(encoding, "value", encoding))   # "utf-16" | "utf-8" | "utf-32"
        client = params.client_info
        log.info("client %s %s, position encoding %s, streaming=%s", client.name if client else "?",
                 (client.version or "") if client else "", ls.service.docs.encoding, options.streaming)
        for w in warnings:
            log.warning("%s", w)
        td = params.capabilities.text_document if params.capabilities else None
        if td is None or td.inline_completion is None:
            from coda_lsp.handlers.inline import register_completion_fallback
            log.info("client declares no inline completion: serving textDocument/completion instead")
            register_completion_fallback(ls)

    @server.feature(types.INITIALIZED)
    def initialized(ls, params: types.InitializedParams) -> None:
        ls.start_loading()

    @server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
    def did_change_configuration(ls, params: types.DidChangeConfigurationParams) -> None:
        outcome = ls.service.reconfigure(params.settings, ls.base_options)   # the section is the truth
        for w in outcome.warnings:
            ls.show(w)
        if outcome.reload:
            ls.start_loading()

    @server.feature(types.SHUTDOWN)
    def shutdown(ls, params) -> None:
        ls.service.shutdown()
