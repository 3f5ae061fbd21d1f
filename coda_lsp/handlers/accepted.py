"""`workspace/executeCommand coda.accepted [id, chars?]`: the editor accepted (part of) a suggestion.

Every inline item carries this command with its id: VS Code runs an item's command when the user
accepts it, Neovim's accept path calls it too, and a partial accept (next word / line) passes the
number of characters taken. It only feeds the local statistics (`coda_lsp.stats`); an unknown id or
bad arguments cost one debug line, never an error in the editor.
"""

from __future__ import annotations

import logging
from typing import Any

from coda_lsp.streaming import ACCEPTED

log = logging.getLogger(__name__)


def register(server) -> None:
    @server.command(ACCEPTED)
    def accepted(ls, *args: Any) -> bool:
        sid = args[0] if args and isinstance(args[0], str) else None
        chars = args[1] if len(args) > 1 and isinstance(args[1], int) and not isinstance(args[1], bool) else None
        if sid is None or not ls.service.stats.accepted(sid, chars):
            log.debug("%s with unknown or bad arguments %r: ignored", ACCEPTED, list(args)[:2])
            return False
        log.debug("%s %s chars=%s", ACCEPTED, sid, "all" if chars is None else chars)
        return True
