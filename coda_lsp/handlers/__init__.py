"""LSP feature handlers, one module per feature; each is thin: find the document, call the service, convert."""

from __future__ import annotations


def register_all(server) -> None:
    from coda_lsp.handlers import accepted, fill, inline, lifecycle, next_edit, stats, sync
    for module in (lifecycle, sync, inline, fill, accepted, stats, next_edit):
        module.register(server)
