"""The language server with a remote engine: real pygls over stdio (`coda-lsp --engine URL`) in front of a
real `coda-lsp serve` subprocess, which the tests kill and restart."""

from __future__ import annotations

import asyncio
import socket
import sys
from dataclasses import replace

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from coda_bench.http import Served
from coda_lsp import pipeline
from coda_lsp.documents import Document
from coda_lsp.loading import load_engine
from coda_lsp.options import ServerOptions, merge_options
from live_http import sharp_dir  # noqa: F401  (fixture)
from test_lsp_server import Recorder, init_params, inline_params, open_doc


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


PORT = _free_port()
ENGINE = f"http://127.0.0.1:{PORT}"
SERVER = [sys.executable, "-m", "coda_lsp.cli", "--engine", ENGINE, "--log-level", "INFO"]
OPTIONS = {"steps": 4, "maxTokens": 8, "debounceMs": 0, "streaming": True, "contextTokens": 256, "speculate": False,
           "minConfidence": 0}   # random weights are unsure of every token: the gate (remote as local) would hide all
SLOW = {"steps": 48, "maxTokens": 48, "threshold": None, "blockLength": 48}
SRC = "def total(xs):\n    s = 0\n    for x in xs:\n        \n    return s\n"


class Remote:
    """`coda-lsp serve` on PORT, started and killed at will (coda-bench http's server runner)."""

    def __init__(self, model) -> None:
        self.model, self.served = str(model), None

    def start(self) -> None:
        self.served = Served(self.model, 1, 1, "float32", port=PORT)
        self.served.wait(timeout_s=120)

    def kill(self) -> None:
        self.served.proc.kill()
        self.served.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.served.proc.poll() is None:
            self.served.close()


@pytest.fixture(scope="module")
def remote(sharp_dir):
    r = Remote(sharp_dir)
    r.start()
    yield r
    r.stop()


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, remote):
    lsp_client.recorder = Recorder(lsp_client)
    lsp_client.init_result = await lsp_client.initialize_session(init_params(OPTIONS))
    await lsp_client.recorder.wait_for(lambda: any(s.state in ("ready", "error") for s in lsp_client.recorder.statuses))
    yield
    await lsp_client.shutdown_session()


def expected_items(model_dir, options: dict, text: str, offset: int) -> list[str]:
    """What the local pipeline gives for the same hole and settings."""
    opts = replace(merge_options(ServerOptions(), options)[0], model_path=str(model_dir), device="cpu",
                   dtype="float32", threads=1)
    doc = Document("file:///w/x.py", text, 1, "python")
    return pipeline.run_once(load_engine(opts), doc, offset, None, opts)[1]


@pytest.mark.asyncio(loop_scope="module")
async def test_the_remote_engine_decodes_what_the_local_one_would_and_streams_partials(client, sharp_dir):
    uri = "file:///w/remote.py"
    open_doc(client, uri, SRC)
    result = await client.text_document_inline_completion_async(inline_params(uri, 3, 8))
    partials = client.recorder.for_uri(uri)
    assert partials and partials[-1].done and any(not p.done and p.steps >= p.step >= 1 for p in partials)
    want = expected_items(sharp_dir, OPTIONS, SRC, SRC.index("        \n") + 8)
    assert [item.insert_text for item in result.items] == want
    assert client.recorder.statuses[-1].state == "ready"


@pytest.mark.asyncio(loop_scope="module")
async def test_remote_dying_mid_request_gives_an_empty_answer_one_status_line_and_reconnects(client, remote):
    rec = client.recorder
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": {**OPTIONS, **SLOW}}))
    uri = "file:///w/dying.py"
    open_doc(client, uri, SRC)
    pending = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 3, 8)))
    await rec.wait_for(lambda: len(rec.for_uri(uri)) >= 1)
    remote.kill()                                   # mid-request: a partial arrived, the decode is not done
    result = await asyncio.wait_for(pending, 60)
    assert list(result.items) == []
    errors = [s for s in rec.statuses if s.state == "error"]
    assert len(errors) == 1 and "closed the connection" in errors[0].message and "\n" not in errors[0].message
    # while it is down: empty answers, the status line says why (once), the server keeps serving
    for _ in range(2):
        again = await client.text_document_inline_completion_async(inline_params(uri, 3, 8))
        assert list(again.items) == []
    errors = [s for s in rec.statuses if s.state == "error"]
    assert len(errors) == 2 and "not reachable" in errors[1].message and rec.statuses[-1] is errors[1]
    # back up: the next request reconnects, answers, and the status returns to ready
    remote.start()
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": OPTIONS}))
    back = await client.text_document_inline_completion_async(inline_params(uri, 3, 8))
    assert isinstance(back, types.InlineCompletionList)
    await rec.wait_for(lambda: rec.statuses[-1].state == "ready", timeout=30)
    assert len(rec.for_uri(uri)) > 1 and rec.for_uri(uri)[-1].done


@pytest.mark.asyncio(loop_scope="module")
async def test_next_edits_on_a_remote_engine_say_once_that_it_lacks_the_stage_and_carry_on(client):
    uri = "file:///w/next-edit-remote.py"
    open_doc(client, uri, SRC)
    ask = {"textDocument": {"uri": uri, "version": 1}, "position": {"line": 1, "character": 5}}
    for _ in range(2):
        answer = await client.protocol.send_request_async("coda/nextEdit", ask)
        assert list(answer.edits if hasattr(answer, "edits") else answer["edits"]) == []
    said = [s for s in client.recorder.statuses if "next-edit stage" in (getattr(s, "message", "") or "")]
    assert len(said) == 1, client.recorder.statuses
    after = await client.text_document_inline_completion_async(inline_params(uri, 3, 8))
    assert isinstance(after, types.InlineCompletionList)
