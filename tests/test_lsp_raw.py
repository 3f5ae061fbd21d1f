"""Raw JSON-RPC over the server's stdio: malformed messages, a missing model, the code action's exact JSON.

These talk bytes, not lsprotocol objects, so they also pin the wire format the editor clients read.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from queue import Empty, Queue

import pytest


class RawClient:
    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "coda_lsp.cli", *args], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.inbox: Queue = Queue()
        self.stderr: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(l.decode("utf-8", "replace") for l in self.proc.stderr),
                         daemon=True).start()

    def _read(self) -> None:
        out = self.proc.stdout
        while True:
            headers = {}
            while True:
                line = out.readline()
                if not line:
                    return
                if line in (b"\r\n", b"\n"):
                    break
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            self.inbox.put(json.loads(out.read(int(headers["content-length"]))))

    def send_bytes(self, body: bytes) -> None:
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, msg: dict) -> None:
        self.send_bytes(json.dumps({"jsonrpc": "2.0", **msg}).encode())

    def wait(self, pred, timeout: float = 60.0) -> dict:
        while True:
            try:
                msg = self.inbox.get(timeout=timeout)
            except Empty:
                raise AssertionError(f"no matching message; server stderr:\n{''.join(self.stderr)[-3000:]}") from None
            if pred(msg):
                return msg

    def request(self, id_: int, method: str, params: dict) -> dict:
        self.send({"id": id_, "method": method, "params": params})
        return self.wait(lambda m: m.get("id") == id_ and "method" not in m)

    def close(self) -> None:
        try:
            self.request(999, "shutdown", None)
            self.send({"method": "exit"})
            self.proc.wait(10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


@pytest.fixture
def raw(tmp_path):
    client = RawClient("--model", str(tmp_path / "no-such-model"))
    init = client.request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {
        "textDocument": {"inlineCompletion": {}}}, "initializationOptions": {"streaming": True}})
    assert "capabilities" in init["result"]
    client.send({"method": "initialized", "params": {}})
    yield client
    client.close()


def test_missing_model_reports_error_status_and_requests_get_empty_results(raw):
    status = raw.wait(lambda m: m.get("method") == "coda/status" and m["params"]["state"] == "error")
    assert "--model" in status["params"]["message"] and "no-such-model" in status["params"]["message"]
    raw.send({"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": "file:///a.py", "languageId": "python", "version": 1, "text": "x = \n"}}})
    resp = raw.request(2, "textDocument/inlineCompletion", {"textDocument": {"uri": "file:///a.py"},
                                                            "position": {"line": 0, "character": 4},
                                                            "context": {"triggerKind": 2}})
    assert resp["result"] == {"items": []}
    assert sum("model not loaded" in line for line in raw.stderr) == 1


def test_malformed_json_rpc_is_survived(raw):
    raw.send_bytes(b"{this is not json")
    raw.send({"id": 3, "method": "textDocument/inlineCompletion", "params": {"nonsense": True}})
    bad = raw.wait(lambda m: m.get("id") == 3)
    assert "error" in bad
    raw.send({"id": 4, "method": "coda/unknownRequest", "params": {}})
    assert "error" in raw.wait(lambda m: m.get("id") == 4)
    ok = raw.request(5, "textDocument/inlineCompletion", {"textDocument": {"uri": "file:///unknown.py"},
                                                          "position": {"line": 0, "character": 0},
                                                          "context": {"triggerKind": 1}})
    assert ok["result"] == {"items": []}
    assert "invalid params" in bad["error"]["message"]
    assert not any(line.startswith("Traceback") for line in raw.stderr)


def test_code_action_carries_the_fill_command_with_uri_and_range(raw):
    raw.send({"method": "textDocument/didOpen", "params": {"textDocument": {
        "uri": "file:///b.py", "languageId": "python", "version": 1, "text": "def f():\n    return 1\n"}}})
    sel = {"start": {"line": 1, "character": 4}, "end": {"line": 1, "character": 12}}
    resp = raw.request(6, "textDocument/codeAction", {"textDocument": {"uri": "file:///b.py"}, "range": sel,
                                                      "context": {"diagnostics": []}})
    (action,) = resp["result"]
    assert action["command"] == {"title": "Fill selection with CoDA", "command": "coda.fillSelection",
                                 "arguments": [{"uri": "file:///b.py", "range": sel}]}
    refused = raw.request(7, "workspace/executeCommand", {"command": "coda.fillSelection",
                                                          "arguments": [{"uri": "file:///b.py", "range": sel}]})
    assert refused["result"]["applied"] is False and "not ready" in refused["result"]["reason"]
    bad = raw.request(8, "workspace/executeCommand", {"command": "coda.fillSelection", "arguments": ["nope"]})
    assert bad["result"] == {"applied": False, "reason": "bad arguments: expected [{uri, range}]"}


def test_negotiated_utf8_positions_are_used(tmp_path):
    client = RawClient("--model", str(tmp_path / "none"))
    try:
        init = client.request(1, "initialize", {"processId": None, "rootUri": None, "capabilities": {
            "general": {"positionEncodings": ["utf-8", "utf-16"]}}})
        assert init["result"]["capabilities"]["positionEncoding"] == "utf-8"
        client.send({"method": "initialized", "params": {}})
        client.wait(lambda m: m.get("method") == "coda/status" and m["params"]["state"] == "error")
        assert any("position encoding utf-8" in line for line in client.stderr)
        # no inlineCompletion capability: the textDocument/completion fallback is served instead
        assert "completionProvider" in init["result"]["capabilities"]
        client.send({"method": "textDocument/didOpen", "params": {"textDocument": {
            "uri": "file:///c.py", "languageId": "python", "version": 1, "text": "x = \n"}}})
        resp = client.request(2, "textDocument/completion", {"textDocument": {"uri": "file:///c.py"},
                                                             "position": {"line": 0, "character": 4}})
        assert resp["result"] == {"isIncomplete": True, "items": []}
    finally:
        client.close()
