"""A minimal asyncio LSP client over a server's stdio: raw JSON-RPC framing, no pygls.

Independent of the server's code on purpose (the soak must not share the bugs it looks for): it
frames `Content-Length` messages, matches responses to requests by id, answers the server's own
requests (`workspace/applyEdit` through a callback, everything else with `null`) and counts the
notifications it receives.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any, Callable, Optional


class RpcError(Exception):
    def __init__(self, error: dict) -> None:
        super().__init__(f"{error.get('code')}: {error.get('message')}")
        self.code = error.get("code")


class LspClient:
    """One server process. `request` returns a future of the result (or RpcError); `notify` sends."""

    def __init__(self, proc: asyncio.subprocess.Process,
                 on_apply_edit: Optional[Callable[[dict], bool]] = None) -> None:
        self.proc = proc
        self.on_apply_edit = on_apply_edit
        self.pending: dict[int, asyncio.Future] = {}
        self.notifications: dict[str, int] = {}
        self.statuses: list[dict] = []
        self._ids = itertools.count(1)
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def start(cls, argv: list[str], stderr_path: str, env: Optional[dict] = None, cwd: Optional[str] = None,
                    **kw: Any) -> "LspClient":
        err = open(stderr_path, "wb")
        proc = await asyncio.create_subprocess_exec(*argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                                                    stderr=err, env={**os.environ, **(env or {})}, cwd=cwd, limit=2**26)
        err.close()
        return cls(proc, **kw)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _send(self, msg: dict) -> None:
        body = json.dumps({"jsonrpc": "2.0", **msg}).encode()
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)

    def request(self, method: str, params: Any) -> tuple[int, asyncio.Future]:
        id_ = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self.pending[id_] = fut
        self._send({"id": id_, "method": method, "params": params})
        return id_, fut

    async def call(self, method: str, params: Any, timeout: float = 120.0) -> Any:
        _, fut = self.request(method, params)
        return await asyncio.wait_for(fut, timeout)

    def notify(self, method: str, params: Any) -> None:
        self._send({"method": method, "params": params})

    def cancel(self, id_: int) -> None:
        self.notify("$/cancelRequest", {"id": id_})

    async def _read(self) -> None:
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = await out.readline()
                if not line:
                    self._fail_pending("server closed its stdout")
                    return
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode().partition(":")
                if k.strip().lower() == "content-length":
                    length = int(v.strip())
            self._dispatch(json.loads(await out.readexactly(length or 0)))

    def _dispatch(self, msg: dict) -> None:
        if "method" not in msg:
            fut = self.pending.pop(msg.get("id"), None)
            if fut is not None and not fut.done():
                if "error" in msg:
                    fut.set_exception(RpcError(msg["error"]))
                else:
                    fut.set_result(msg.get("result"))
            return
        method = msg["method"]
        if "id" in msg:   # a request from the server
            result: Any = None
            if method == "workspace/applyEdit":
                result = {"applied": bool(self.on_apply_edit(msg["params"])) if self.on_apply_edit else False}
            self._send({"id": msg["id"], "result": result})
            return
        self.notifications[method] = self.notifications.get(method, 0) + 1
        if method == "coda/status":
            self.statuses.append(msg["params"])

    def _fail_pending(self, why: str) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError(why))
        self.pending.clear()

    async def stop(self, timeout: float = 30.0) -> int:
        """shutdown + exit; the exit code (killed after `timeout`)."""
        try:
            await self.call("shutdown", None, timeout)
            self.notify("exit", None)
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except (asyncio.TimeoutError, ConnectionError, RpcError):
            self.proc.kill()
            return await self.proc.wait()
        finally:
            self._reader.cancel()
