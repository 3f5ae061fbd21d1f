"""The pygls server object: state lives here (the service), features live in `coda_lsp.handlers`.

`build_server(options)` returns a `CodaLanguageServer` with every handler registered. The model is
loaded by a background task started on `initialized`; until it is ready, requests get an empty
result. `coda/status` tells the client which state the server is in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Optional

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol, default_converter

from coda_lsp import __version__
from coda_lsp.options import ServerOptions
from coda_lsp.next_edit import NextEditService
from coda_lsp.service import CompletionService
from coda_lsp.streaming import PARTIAL_COMPLETION, STATUS, partial_params, status_params

log = logging.getLogger(__name__)


class TriggerKinds:
    """Normalises `InlineCompletionContext.triggerKind` across the two encodings clients send.

    LSP 3.18 final: Invoked=1, Automatic=2. Pre-3.18 protocol types (vscode-languageclient 9): Invoked=0,
    Automatic=1. A 0 can only come from the old encoding, so after the first 0 a 1 means Automatic.
    """

    def __init__(self) -> None:
        self.legacy = False

    def structure(self, value: Any, _type: Any) -> types.InlineCompletionTriggerKind:
        try:
            v = int(value)
        except (TypeError, ValueError):
            log.warning("inline completion triggerKind %r is not a number: treated as Automatic", value)
            return types.InlineCompletionTriggerKind.Automatic
        if v == 0:
            if not self.legacy:
                log.info("client uses the pre-3.18 triggerKind encoding (Invoked=0, Automatic=1)")
            self.legacy = True
            return types.InlineCompletionTriggerKind.Invoked
        if v == 1:
            return types.InlineCompletionTriggerKind.Automatic if self.legacy else types.InlineCompletionTriggerKind.Invoked
        return types.InlineCompletionTriggerKind.Automatic


_IGNORED = object()


class CodaProtocol(LanguageServerProtocol):
    """pygls' protocol, but a request whose params do not parse gets an InvalidParams answer
    (pygls logs a traceback and never answers it, leaving the client waiting), and a finished
    handler's future is always forgotten (see `_execute_handler`).
    """

    def _execute_handler(self, msg_id: Any, handler: Any, callback: Any, args: Any = None, kwargs: Any = None):
        """pygls 2.1 files a future under a fresh uuid in `_request_futures` and never removes it for
        every notification with a builtin handler (didOpen, didChange, didClose: one per keystroke) and
        for a user handler run behind a builtin one (our async `coda.fillSelection` behind
        `workspace/executeCommand`): ~1.7 KB kept per keystroke, forever (found by the soak, growing
        ~1.3 entries per operation). Forget every handler's future once it is done."""
        def forget_then(future: Any) -> None:
            self._request_futures.pop(msg_id, None)
            callback(future)
        super()._execute_handler(msg_id, handler, forget_then, args, kwargs)

    def structure_message(self, data: Any) -> Any:
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            if isinstance(data, dict) and "method" in data:
                log.warning("invalid %s message (id %s): %s", data.get("method"), data.get("id", "-"), exc.__cause__ or exc)
                if "id" in data:
                    self._send_response(data["id"], error=types.ResponseError(
                        code=-32602, message=f"invalid params for {data['method']}: {exc.__cause__ or exc}"[:500]))
                return _IGNORED
            raise

    def handle_message(self, message: Any) -> None:
        if message is _IGNORED:
            return
        super().handle_message(message)


class CodaLanguageServer(LanguageServer):
    """LanguageServer + the completion service + what the session negotiated."""

    def __init__(self, options: Optional[ServerOptions] = None) -> None:
        self.trigger_kinds = TriggerKinds()

        def converter_factory():
            conv = default_converter()
            conv.register_structure_hook(types.InlineCompletionTriggerKind, self.trigger_kinds.structure)
            return conv

        super().__init__("coda-lsp", __version__, protocol_cls=CodaProtocol, converter_factory=converter_factory)
        self.base_options = options or ServerOptions()
        self.service = CompletionService(self.base_options)
        self.next_edits = NextEditService(self.service)   # coda/nextEdit, on the same documents and worker
        self.load_task: Optional[asyncio.Task] = None
        self.status_state = ""
        self.status_message: Optional[str] = None

    # --- notifications ---------------------------------------------------------------------------
    def send_status(self, state: str, message: Optional[str] = None) -> None:
        if state == self.status_state and state in ("busy", "ready") and message is None:
            return
        self.status_state, self.status_message = state, message
        self.protocol.notify(STATUS, status_params(state, message))

    def status_busy(self) -> None:
        """Before a run; skipped while a remote engine is failing, so its error stays one line."""
        if self.service.ready and not self.service.remote_error:
            self.send_status("busy")

    def status_after_run(self, note: Optional[str] = None) -> None:
        """After a run: the remote engine's failure (one status line, replaced only when the reason
        changes), else ready (with `note`, e.g. why the confidence gate showed nothing) when nothing else runs."""
        s = self.service
        if s.remote_error:
            if (self.status_state, self.status_message) != ("error", s.remote_error):
                self.send_status("error", s.remote_error)
        elif s.ready and s.scheduler.active == 0:
            self.send_status("ready", note)

    def send_partial(self, event) -> None:
        self.protocol.notify(PARTIAL_COMPLETION, partial_params(event))

    def show(self, message: str, kind: types.MessageType = types.MessageType.Warning) -> None:
        """One log line, and the same line in the editor's message area."""
        log.warning("%s", message) if kind != types.MessageType.Info else log.info("%s", message)
        self.window_show_message(types.ShowMessageParams(type=kind, message=f"coda: {message}"))

    @property
    def supports_progress(self) -> bool:
        caps = self.client_capabilities
        return bool(caps and caps.window and caps.window.work_done_progress)

    # --- model loading ---------------------------------------------------------------------------
    def start_loading(self) -> None:
        if self.load_task is not None and not self.load_task.done():
            return
        self.load_task = asyncio.get_running_loop().create_task(self._load())

    async def _load(self) -> None:
        token = None
        self.send_status("loading", self.service.options.model_path or "default model")
        if self.supports_progress:
            token = f"coda-load-{id(self)}-{asyncio.get_running_loop().time():.0f}"
            try:
                await self.work_done_progress.create_async(token)
                self.work_done_progress.begin(token, types.WorkDoneProgressBegin(
                    title="coda: loading model", message=self.service.options.model_path or "default model"))
            except Exception as exc:   # the client refused the token: load without progress
                log.info("no work-done progress (%s)", exc)
                token = None
        await self.service.load()
        if token is not None:
            self.work_done_progress.end(token, types.WorkDoneProgressEnd(message=self.service.message))
        if self.service.ready:
            self.send_status("ready", self.service.message)
        else:
            self.send_status("error", self.service.message)   # (already logged once by the service)
            self.window_show_message(types.ShowMessageParams(type=types.MessageType.Error,
                                                             message=f"coda: {self.service.message}"))


def build_server(options: Optional[ServerOptions] = None) -> CodaLanguageServer:
    from coda_lsp.handlers import register_all
    server = CodaLanguageServer(options)
    register_all(server)
    return server
