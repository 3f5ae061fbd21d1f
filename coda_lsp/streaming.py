"""Wire format of the custom notifications (camelCase, exactly what the editor clients read).

`coda/partialCompletion` {uri, version, range, text, prefix, step, steps, maskedCount, done, requestId}: one
per denoise step while a request runs (when `initializationOptions.streaming` is true), the last one
with `done: true`, all before the request's response. `text` is the hole so far with still-masked
spans left out; `prefix` is what a Tab accepts while it streams: the decoded text before the first
still-masked token, cut by the confidence gate (`minConfidence`).
`coda/status` {state: "loading" | "ready" | "busy" | "error", message?}.
"""

from __future__ import annotations

from typing import Any, Optional

from coda_lsp.documents import Pos

PARTIAL_COMPLETION = "coda/partialCompletion"
STATUS = "coda/status"
FILL_SELECTION = "coda.fillSelection"
ACCEPTED = "coda.accepted"          # [id, chars?]: the editor accepted (chars of) an inline item
REJECTED = "coda.rejected"          # [id]: the user dismissed a next edit (coda/nextEdit) by its key
STATES = ("loading", "ready", "busy", "error")


def lsp_range(start: Pos, end: Pos) -> dict[str, Any]:
    return {"start": {"line": start.line, "character": start.character},
            "end": {"line": end.line, "character": end.character}}


def partial_params(event) -> dict[str, Any]:
    """`coda/partialCompletion` params for a `pipeline.PartialEvent`."""
    return {"uri": event.uri, "version": event.version, "range": lsp_range(event.start, event.end),
            "text": event.text, "prefix": event.prefix, "step": event.step, "steps": event.steps, "maskedCount": event.masked_count,
            "done": event.done, "requestId": event.request_id}


def status_params(state: str, message: Optional[str] = None) -> dict[str, Any]:
    assert state in STATES, state
    out: dict[str, Any] = {"state": state}
    if message:
        out["message"] = message
    return out
