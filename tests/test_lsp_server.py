"""End-to-end over stdio with a real LSP client (pytest-lsp) and a tiny random-weight CoDA model.

One server per module (torch + model load once); each test uses its own document URIs.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest
import pytest_lsp
from coda_model import DecodeConfig
from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient

SERVER = [sys.executable, "-m", "coda_lsp.cli", "--log-level", "INFO"]
SRC = "def fibonacci(n):\n    if n < 2:\n        \n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
RUST_SRC = "fn fib(n: u64) -> u64 {\n    if n < 2 {\n        \n    }\n    fib(n - 1) + fib(n - 2)\n}\n"
OPTIONS = {"steps": 4, "maxTokens": 8, "debounceMs": 0, "streaming": True, "contextTokens": 256,
           "minConfidence": 0, "minShownConfidence": 0}   # random weights: the gate would hide everything


class Recorder:
    """Collects custom notifications and applyEdit requests the server sends, with events to wait on."""

    def __init__(self, client: LanguageClient) -> None:
        self.partials: list = []
        self.statuses: list = []
        self.edits: list = []
        self.changed = asyncio.Event()

        @client.feature("coda/partialCompletion")
        def on_partial(ls, params):
            self.partials.append(params)
            self.changed.set()

        @client.feature("coda/status")
        def on_status(ls, params):
            self.statuses.append(params)
            self.changed.set()

        @client.feature(types.WORKSPACE_APPLY_EDIT)
        def on_apply(ls, params: types.ApplyWorkspaceEditParams):
            self.edits.append(params)
            return types.ApplyWorkspaceEditResult(applied=True)

    async def wait_for(self, predicate, timeout: float = 120.0):
        async def loop():
            while not predicate():
                self.changed.clear()
                await self.changed.wait()
        await asyncio.wait_for(loop(), timeout)

    def for_uri(self, uri: str) -> list:
        return [p for p in self.partials if p.uri == uri]


def init_params(options: dict, inline: bool = True) -> types.InitializeParams:
    td = types.TextDocumentClientCapabilities(inline_completion=types.InlineCompletionClientCapabilities()) if inline else None
    return types.InitializeParams(
        capabilities=types.ClientCapabilities(text_document=td, window=types.WindowClientCapabilities(work_done_progress=True)),
        initialization_options=options, client_info=types.ClientInfo(name="pytest-lsp", version="1"))


@pytest_lsp.fixture(scope="module", config=ClientServerConfig(server_command=SERVER))
async def client(lsp_client: LanguageClient, tiny_model_dir):
    lsp_client.recorder = Recorder(lsp_client)
    # the whole `coda` section this client sends: a didChangeConfiguration replaces it (absent keys reset)
    lsp_client.section = {**OPTIONS, "modelPath": str(tiny_model_dir), "device": "cpu", "dtype": "float32"}
    lsp_client.init_result = await lsp_client.initialize_session(init_params(lsp_client.section))
    await lsp_client.recorder.wait_for(lambda: any(s.state in ("ready", "error") for s in lsp_client.recorder.statuses))
    yield
    await lsp_client.shutdown_session()


def open_doc(client: LanguageClient, uri: str, text: str = SRC, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def inline_params(uri: str, line: int, character: int, kind=types.InlineCompletionTriggerKind.Automatic):
    return types.InlineCompletionParams(text_document=types.TextDocumentIdentifier(uri=uri),
                                        position=types.Position(line=line, character=character),
                                        context=types.InlineCompletionContext(trigger_kind=kind))


@pytest.mark.asyncio(loop_scope="module")
async def test_initialize_advertises_features_and_the_model_loads_with_status_and_progress(client):
    caps = client.init_result.capabilities
    assert caps.inline_completion_provider is not None
    assert "coda.fillSelection" in caps.execute_command_provider.commands
    assert caps.code_action_provider and caps.completion_provider is None
    states = [s.state for s in client.recorder.statuses]
    assert states[0] == "loading" and states[-1] == "ready", client.recorder.statuses
    reports = [r for rs in client.progress_reports.values() for r in rs]
    assert reports[0].kind == "begin" and reports[-1].kind == "end"


@pytest.mark.asyncio(loop_scope="module")
async def test_inline_completion_after_an_incremental_edit_streams_partials_ending_with_done(client):
    uri = "file:///w/stream.py"
    open_doc(client, uri, "def f(x):\n    return x\n")
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=12), end=types.Position(line=1, character=12)),
            text="\n    \n")]))
    result = await client.text_document_inline_completion_async(inline_params(uri, 2, 4))
    partials = client.recorder.for_uri(uri)
    assert partials, "no coda/partialCompletion before the response"
    assert [p.step for p in partials[:-1]] == sorted(p.step for p in partials[:-1])
    assert partials[-1].done and not any(p.done for p in partials[:-1])
    assert all(p.version == 2 and p.steps >= p.step for p in partials)
    assert partials[0].range.start.line == 2 and partials[0].range.start.character == 4
    assert isinstance(result, types.InlineCompletionList)
    for item in result.items:
        assert item.range.start == types.Position(line=2, character=4) and item.insert_text.strip()
    assert len({p.requestId for p in partials}) == 1 and partials[0].requestId   # one id through the request


@pytest.mark.asyncio(loop_scope="module")
async def test_cli_complete_prints_the_servers_first_inline_item(client, tiny_model_dir, tmp_path):
    """`coda-lsp complete` and the server run the same four stages: same file, same hole, same text.

    (A language no other test opens: the server adds snippets of other open documents of the same language.)"""
    path = tmp_path / "same.rs"
    path.write_text(RUST_SRC, encoding="utf-8")
    uri = path.as_uri()
    open_doc(client, uri, RUST_SRC, "rust")
    result = await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
    flags = ["--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32", "--steps", str(OPTIONS["steps"]),
             "--max-tokens", str(OPTIONS["maxTokens"]), "--context-tokens", str(OPTIONS["contextTokens"]),
             "--min-confidence", "0", "--min-shown-confidence", "0"]
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "coda_lsp.cli", "complete", f"{path}:3:9", *flags,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 300)
    server_text = result.items[0].insert_text if result.items else None
    cli_text = out.decode().removesuffix("\n") if proc.returncode == 0 else None
    assert cli_text == server_text, err.decode()[-500:]


@pytest.mark.asyncio(loop_scope="module")
async def test_invoked_trigger_returns_a_list_and_automatic_too(client):
    uri = "file:///w/trigger.py"
    open_doc(client, uri)
    for kind in (types.InlineCompletionTriggerKind.Invoked, types.InlineCompletionTriggerKind.Automatic):
        result = await client.text_document_inline_completion_async(inline_params(uri, 2, 8, kind))
        assert isinstance(result, types.InlineCompletionList) and len(result.items) <= 3


async def complete_fresh(client, uri: str) -> types.InlineCompletionList:
    """Open a small document and ask at the end of `    y = ` (where the tiny model gives an item)."""
    open_doc(client, uri, "def f(x):\n    y = \n    return y\n")
    first = await client.text_document_inline_completion_async(inline_params(uri, 1, 8))
    assert first.items, "the tiny model gave no item here; pick another position"
    return first


@pytest.mark.asyncio(loop_scope="module")
async def test_typing_the_predicted_text_is_answered_from_the_type_through_cache(client):
    uri = "file:///w/typethrough.py"
    first = await complete_fresh(client, uri)
    text = first.items[0].insert_text
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangePartial(
            range=types.Range(start=types.Position(line=1, character=8), end=types.Position(line=1, character=8)),
            text=text[0])]))
    n_partials = len(client.recorder.for_uri(uri))
    again = await client.text_document_inline_completion_async(inline_params(uri, 1, 9))
    assert [i.insert_text for i in again.items] == [text[1:]]
    assert again.items[0].range.start == types.Position(line=1, character=9)
    assert len(client.recorder.for_uri(uri)) == n_partials     # no model run: no partials


def end_of(start: types.Position, text: str) -> types.Position:
    """Where the cursor lands after inserting `text` at `start` (UTF-16 columns)."""
    lines = text.split("\n")
    col = len(lines[-1].encode("utf-16-le")) // 2
    return types.Position(line=start.line + len(lines) - 1, character=(start.character if len(lines) == 1 else 0) + col)


async def accept_then_ask_again(client, uri: str, version: int, first) -> tuple[list, types.InlineCompletionList]:
    """Apply the first item as the editor does on Tab, then ask at the new cursor; returns (partials, result)."""
    item = first.items[0]
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=item.range, text=item.insert_text)]))
    n = len(client.recorder.for_uri(uri))
    cursor = end_of(item.range.start, item.insert_text)
    again = await client.text_document_inline_completion_async(inline_params(uri, cursor.line, cursor.character))
    return client.recorder.for_uri(uri)[n:], again


@pytest.mark.asyncio(loop_scope="module")
async def test_the_completion_after_accepting_an_item_was_computed_ahead(client):
    src = "def f(x):\n    y = \n    return y\n"
    uri = "file:///w/speculate.py"
    open_doc(client, uri, src)
    first = await client.text_document_inline_completion_async(inline_params(uri, 1, 8))
    assert first.items, "the tiny model gave no item here; pick another position"
    partials, again = await accept_then_ask_again(client, uri, 2, first)
    assert isinstance(again, types.InlineCompletionList)
    assert partials and all(p.done for p in partials), "the model ran again after Tab: no speculation"
    # control: with speculation off the same situation runs the model (step partials before done)
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": {**client.section, "speculate": False}}))
    try:
        uri2 = "file:///w/no_speculate.py"
        open_doc(client, uri2, src.replace("y", "w"))
        first2 = await client.text_document_inline_completion_async(inline_params(uri2, 1, 8))
        assert first2.items
        partials2, _ = await accept_then_ask_again(client, uri2, 2, first2)
        assert any(not p.done for p in partials2), partials2
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": {**client.section, "speculate": True}}))


@pytest.mark.asyncio(loop_scope="module")
async def test_replace_range_covers_closers_at_the_end_of_the_line(client):
    uri = "file:///w/closers.py"
    open_doc(client, uri, "x = 1\nprint(x, )\n")
    result = await client.text_document_inline_completion_async(
        inline_params(uri, 1, 9, types.InlineCompletionTriggerKind.Invoked))
    for item in result.items:
        assert item.range.start.character == 9 and item.range.end.character == 10
        assert item.insert_text.endswith(")")


@pytest.mark.asyncio(loop_scope="module")
async def test_fill_selection_streams_partials_then_applies_one_edit(client):
    uri = "file:///w/fill.py"
    open_doc(client, uri)
    rng = {"start": {"line": 3, "character": 4}, "end": {"line": 3, "character": 44}}
    n_edits = len(client.recorder.edits)
    result = await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.fillSelection", arguments=[{"uri": uri, "range": rng}]))
    partials = client.recorder.for_uri(uri)
    assert partials and partials[-1].done
    if result["applied"]:
        edit = client.recorder.edits[n_edits]
        assert len(client.recorder.edits) == n_edits + 1
        (text_edit,) = edit.edit.changes[uri]
        assert text_edit.range.start == types.Position(line=3, character=4)
    else:
        assert result["reason"] == "no fill (superseded or empty)"


@pytest.mark.asyncio(loop_scope="module")
async def test_fill_is_refused_when_the_document_changes_meanwhile(client):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={**client.section, "steps": 64}))
    uri = "file:///w/fill-changed.py"
    open_doc(client, uri)
    rng = {"start": {"line": 0, "character": 0}, "end": {"line": 3, "character": 44}}
    n_edits = len(client.recorder.edits)
    task = asyncio.ensure_future(client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.fillSelection", arguments=[{"uri": uri, "range": rng}])))
    await client.recorder.wait_for(lambda: client.recorder.for_uri(uri))
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
        content_changes=[types.TextDocumentContentChangeWholeDocument(text=SRC + "# edited\n")]))
    result = await task
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=client.section))
    assert result["applied"] is False and result["reason"] == "document changed while filling"
    assert len(client.recorder.edits) == n_edits
    assert any("changed while filling" in m.message for m in client.messages)


@pytest.mark.asyncio(loop_scope="module")
async def test_status_goes_busy_during_a_request_and_back_to_ready(client):
    uri = "file:///w/busy.py"
    open_doc(client, uri)
    start = len(client.recorder.statuses)
    await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
    states = [s.state for s in client.recorder.statuses[start:]]
    assert "busy" in states and states[-1] == "ready"


@pytest.mark.asyncio(loop_scope="module")
async def test_cancelled_request_stops_and_sends_no_late_partials(client):
    uri = "file:///w/cancel.py"
    open_doc(client, uri)
    fut = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 2, 8), msg_id="cancel-me")
    await client.recorder.wait_for(lambda: client.recorder.for_uri(uri))
    client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
    with pytest.raises(Exception, match="cancel"):
        await asyncio.wait_for(asyncio.wrap_future(fut), 60)
    seen = len(client.recorder.for_uri(uri))
    # a full request afterwards: the model is free again, and the cancelled URI got nothing more
    other = "file:///w/after-cancel.py"
    open_doc(client, other)
    await client.text_document_inline_completion_async(inline_params(other, 2, 8))
    assert len(client.recorder.for_uri(uri)) == seen
    assert not any(p.done for p in client.recorder.for_uri(uri))


@pytest.mark.asyncio(loop_scope="module")
async def test_a_newer_request_on_the_same_document_supersedes_the_older(client):
    uri = "file:///w/supersede.py"
    open_doc(client, uri)
    first = client.protocol.send_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 2, 8))
    second = await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
    first_result = await asyncio.wait_for(asyncio.wrap_future(first), 60)
    assert not first_result.items and isinstance(second, types.InlineCompletionList)


@pytest.mark.asyncio(loop_scope="module")
async def test_bad_input_gets_empty_answers_and_the_server_keeps_serving(client):
    # unknown URI, positions past the end, an offset inside a surrogate pair, binary content
    missing = await client.text_document_inline_completion_async(inline_params("file:///w/none.py", 0, 0))
    assert not missing.items
    uri = "file:///w/odd.py"
    open_doc(client, uri, "s = '😀'\n")
    past = await client.text_document_inline_completion_async(inline_params(uri, 40, 99))
    mid = await client.text_document_inline_completion_async(inline_params(uri, 0, 6))
    assert isinstance(past, types.InlineCompletionList) and isinstance(mid, types.InlineCompletionList)
    open_doc(client, "file:///w/blob.bin", "\x00\x01\x02binary\x00")
    blob = await client.text_document_inline_completion_async(inline_params("file:///w/blob.bin", 0, 3))
    assert not blob.items
    alive = await client.text_document_inline_completion_async(inline_params(uri, 1, 0))
    assert isinstance(alive, types.InlineCompletionList)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_50mb_document_is_served_with_a_bounded_context(client):
    uri = "file:///w/huge.py"
    text = "x = 1  # padding line for a very large file\n" * (50_000_000 // 44)
    open_doc(client, uri, text)
    result = await client.text_document_inline_completion_async(inline_params(uri, 600_000, 0))
    assert isinstance(result, types.InlineCompletionList)
    client.text_document_did_close(types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=uri)))


@pytest.mark.asyncio(loop_scope="module")
async def test_settings_change_through_did_change_configuration(client):
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**client.section, "steps": 2, "temperature": "hot"}}))
    uri = "file:///w/config.py"
    open_doc(client, uri)
    await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
    assert max(p.step for p in client.recorder.for_uri(uri)) <= 2
    assert any("temperature" in m.message for m in client.messages)


@pytest.mark.asyncio(loop_scope="module")
async def test_a_setting_the_client_no_longer_sends_takes_the_server_default(client):
    """didChangeConfiguration carries the client's whole section: a removed key resets, not sticks."""
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**client.section, "maxTokens": 32, "steps": 8}}))
    uri = "file:///w/reset.py"
    open_doc(client, uri)
    await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
    assert {p.steps for p in client.recorder.for_uri(uri)} == {8}
    removed = {k: v for k, v in client.section.items() if k != "steps"} | {"maxTokens": 32}
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": removed}))
    try:
        n = len(client.recorder.for_uri(uri))
        client.text_document_did_change(types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=2),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=SRC + "# again\n")]))
        await client.text_document_inline_completion_async(inline_params(uri, 2, 8))
        # the default's steps, clamped to the hole (the engine never plans more steps than tokens)
        assert {p.steps for p in client.recorder.for_uri(uri)[n:]} == {min(DecodeConfig.editor().steps, 32)}
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"coda": client.section}))


@pytest.mark.asyncio(loop_scope="module")
async def test_items_carry_an_accept_command_that_feeds_the_local_statistics(client):
    """The item's `coda.accepted` command (what VS Code runs on accept) records it once, with no code text."""
    uri = "file:///w/stats.py"
    auto = await complete_fresh(client, uri)
    # partials carry the prefix a Tab takes while streaming: a start of the streamed text's first run
    partials = [p for p in client.recorder.for_uri(uri) if not p.done]
    assert partials and all(isinstance(p.prefix, str) for p in partials)
    # invoked: several candidates, the greedy one shown before first (so cycling starts from it)
    invoked = await client.text_document_inline_completion_async(
        inline_params(uri, 1, 8, types.InlineCompletionTriggerKind.Invoked))
    assert invoked.items[0].insert_text == auto.items[0].insert_text and len(invoked.items) >= 2
    ids = [i.command.arguments[0] for i in invoked.items]
    assert all(i.command.command == "coda.accepted" for i in invoked.items) and len(set(ids)) == len(ids)
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.accepted", arguments=[ids[1]])) is True
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.accepted", arguments=[ids[1]])) is False          # recorded once
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="coda.accepted", arguments=[{"bad": 1}])) is False
    stats = Path(os.environ["XDG_STATE_HOME"]) / "coda-lsp" / "stats.jsonl"
    rows = [json.loads(l) for l in stats.read_text().splitlines()]
    mine = [r for r in rows if r["id"] == ids[0].split(".")[0]]   # the candidates are one suggestion
    assert [r["outcome"] for r in mine] == ["accepted"] and "text" not in mine[0]
    assert mine[0]["accepted_chars"] == mine[0]["chars"] == len(invoked.items[1].insert_text)
    assert any(r["outcome"] == "dismissed" for r in rows)              # the automatic item, replaced


@pytest.mark.asyncio(loop_scope="module")
async def test_the_confidence_gate_hides_unsure_suggestions_and_says_so_in_the_log(client):
    """Random weights are unsure of every token: a gate asking for 0.5 shows nothing for them."""
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
        settings={"coda": {**client.section, "minShownConfidence": 0.5}}))
    try:
        uri = "file:///w/gate.py"
        open_doc(client, uri, "def g(x):\n    z = \n    return z\n")
        n = len(client.recorder.statuses)
        result = await client.text_document_inline_completion_async(inline_params(uri, 1, 8))
        assert list(result.items) == []
        await client.recorder.wait_for(lambda: any(s.state == "ready" for s in client.recorder.statuses[n:]))
        notes = [m for s in client.recorder.statuses[n:] if "confidence gate" in (m := getattr(s, "message", ""))]
        assert len(notes) == 1 and "minShownConfidence 0.5" in notes[0], client.recorder.statuses[n:]
        assert not any("confidence gate" in m.message for m in client.messages)   # not a popup in the editor
    finally:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(
            settings={"coda": client.section}))
