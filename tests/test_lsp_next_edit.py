"""`coda/nextEdit` and `textDocument/copilotInlineEdit` end to end: a real pygls server over stdio, the
embedded default model, a real LSP client (pytest-lsp). The bar is 0 so the weak model's proposals come
through: these tests check the protocol, the version rules, the bad inputs and the statistics."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pytest
import pytest_lsp
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

from coda_lsp.next_edit import EditTracker, minimal_edit
from tests.test_lsp_server import SERVER, Recorder, init_params, open_doc

OPTIONS = {"nextEditMinConfidence": 0, "nextEditDebounceMs": 0, "debounceMs": 0, "device": "cpu", "threads": 1,
           "speculate": False}
SRC = ("import os\n\n\ndef total_size(paths, follow):\n    result = 0\n    for path in paths:\n"
       "        if follow and os.path.islink(path):\n            path = os.path.realpath(path)\n"
       "        result += os.path.getsize(path)\n    return result\n")
RENAMED_AT = (5, 8)   # "for path in paths" -> "for item in paths": line 5, "path" at 8..12


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient):
    lsp_client.recorder = Recorder(lsp_client)
    lsp_client.init_result = await lsp_client.initialize_session(init_params(OPTIONS))
    await lsp_client.recorder.wait_for(lambda: any(s.state in ("ready", "error") for s in lsp_client.recorder.statuses))
    yield
    await lsp_client.shutdown_session()


def rename(client: LanguageClient, uri: str, version: int = 2) -> None:
    line, col = RENAMED_AT
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=line, character=col),
                              end=types.Position(line=line, character=col + 4)), text="item")]))


async def ask(client: LanguageClient, uri: str, line: int, character: int, version=None, method="coda/nextEdit",
              **extra) -> dict:
    td = {"uri": uri} if version is None else {"uri": uri, "version": version}
    return await client.protocol.send_request_async(method, {"textDocument": td,
                                                             "position": {"line": line, "character": character},
                                                             **extra})


def edits_of(answer) -> list:
    return list(answer.edits if hasattr(answer, "edits") else answer["edits"])


def field(obj, key):
    return obj[key] if isinstance(obj, dict) else getattr(obj, key)


def status_lines(client) -> list[str]:
    return [getattr(s, "message", "") or "" for s in client.recorder.statuses]


def test_the_tracker_follows_the_latest_edit_burst():
    t = EditTracker()
    t.note("u", "for path in x", "for p in x")
    assert t.region("u") == (5, 5)                # "ath" deleted
    t.note("u", "for p in x", "for pa in x")      # typing on: one burst
    assert t.region("u") == (5, 6)
    t.note("u", "for pa in x", "for pa in y")     # elsewhere: a new burst
    assert t.region("u") == (10, 11)
    assert minimal_edit("(path", "(item", 10) == (11, 15, "item")


@pytest.mark.asyncio(loop_scope="module")
async def test_a_rename_gets_edits_against_its_version_outside_the_edit_with_an_accept_command(client):
    uri = "file:///ne/rename.py"
    open_doc(client, uri, SRC)
    rename(client, uri)
    for method in ("coda/nextEdit", "textDocument/copilotInlineEdit"):
        answer = await ask(client, uri, RENAMED_AT[0], RENAMED_AT[1] + 4, version=2, method=method)
        edits = edits_of(answer)
        assert edits, "bar 0: the default model proposes something here"
        for e in edits:
            assert field(field(e, "textDocument"), "version") == 2 and field(field(e, "textDocument"), "uri") == uri
            rng = field(e, "range")
            start, end = field(rng, "start"), field(rng, "end")
            assert not (field(start, "line") == RENAMED_AT[0] and field(start, "character") < RENAMED_AT[1] + 4
                        and field(end, "character") > RENAMED_AT[1]), "the user's own edit is never proposed"
            assert field(field(e, "command"), "command") == "coda.accepted"
    sid = field(field(edits[0], "command"), "arguments")[0]
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.accepted", arguments=[sid])) is True
    answer = await ask(client, uri, RENAMED_AT[0], RENAMED_AT[1] + 4, version=2)
    sid2 = field(field(edits_of(answer)[0], "command"), "arguments")[0]
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.rejected", arguments=[sid2])) is True
    rows = [json.loads(l) for l in (Path(os.environ["XDG_STATE_HOME"]) / "coda-lsp" / "stats.jsonl").read_text().splitlines()]
    mine = {r["id"]: r for r in rows if r.get("kind") == "next_edit"}
    assert mine[sid.split(".")[0]]["outcome"] == "accepted" and mine[sid2.split(".")[0]]["outcome"] == "rejected"


@pytest.mark.asyncio(loop_scope="module")
async def test_a_request_for_a_version_the_document_left_is_dropped_with_a_status_line(client):
    uri = "file:///ne/stale.py"
    open_doc(client, uri, SRC)
    rename(client, uri, version=2)
    assert edits_of(await ask(client, uri, 5, 12, version=1)) == []
    assert any("dropped" in m for m in status_lines(client))


@pytest.mark.asyncio(loop_scope="module")
async def test_an_edit_racing_a_newer_keystroke_is_never_returned(client):
    """The keystroke lands while the request waits for the model: the answer is empty, not stale edits."""
    uri = "file:///ne/race.py"
    open_doc(client, uri, SRC)
    rename(client, uri, version=2)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={**OPTIONS, "nextEditDebounceMs": 300}))
    seen = len(client.recorder.statuses)
    task = asyncio.ensure_future(ask(client, uri, 5, 12))
    # the server took the request (busy) and waits out its debounce: now the user types
    await client.recorder.wait_for(lambda: any(s.state == "busy" for s in client.recorder.statuses[seen:]))
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=3),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=4, character=14), end=types.Position(line=4, character=14)),
            text="0")]))
    assert edits_of(await task) == []
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**OPTIONS, "nextEditDebounceMs": 0}))


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_input_gets_an_empty_answer_and_a_status_line_and_the_server_keeps_serving(client):
    assert edits_of(await ask(client, "file:///ne/none.py", 0, 0)) == []
    assert any("not open" in m for m in status_lines(client))
    blank = "file:///ne/blank.py"
    open_doc(client, blank, "\n\n   \n\t\n")
    assert edits_of(await ask(client, blank, 2, 1)) == []
    assert any("blank" in m for m in status_lines(client))
    huge = "file:///ne/huge.py"
    open_doc(client, huge, "x = [" + "1, " * 5000 + "]\ny = x\n")
    assert edits_of(await ask(client, huge, 1, 0)) == []
    assert any("longer than" in m for m in status_lines(client))
    end = "file:///ne/end.py"
    open_doc(client, end, SRC)
    lines = SRC.split("\n")
    answer = await ask(client, end, len(lines) - 1, 0)          # the cursor at the end of the file
    assert isinstance(edits_of(answer), list)
    assert edits_of(await client.protocol.send_request_async("coda/nextEdit", {"position": "nowhere"})) == []
    assert edits_of(await ask(client, end, 999, 999)) is not None   # past the end: clamped, answered
    # what Copilot's Neovim clients send besides the request
    client.protocol.notify("textDocument/didShowInlineEdit", {"item": {"command": {"command": "coda.accepted"}}})
    client.protocol.notify("textDocument/didFocus", {"textDocument": {"uri": end}})
    alive = await ask(client, end, 3, 4)
    assert isinstance(edits_of(alive), list)


@pytest.mark.asyncio(loop_scope="module")
async def test_next_edit_off_and_manual_modes(client):
    uri = "file:///ne/modes.py"
    open_doc(client, uri, SRC)
    rename(client, uri)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**OPTIONS, "nextEdit": "manual"}))
    assert edits_of(await ask(client, uri, 5, 12)) == []
    assert edits_of(await ask(client, uri, 5, 12, invoked=True)), "manual: the editor's key still asks"
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**OPTIONS, "nextEdit": "off"}))
    assert edits_of(await ask(client, uri, 5, 12, invoked=True)) == []
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={**OPTIONS, "nextEdit": "on", "nextEditMinConfidence": 1}))
    assert edits_of(await ask(client, uri, 5, 12)) == [], "nothing the weak model proposes is that sure"
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**OPTIONS, "nextEditMinConfidence": 0}))
