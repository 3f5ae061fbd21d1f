"""`coda-lsp complete` / `coda-lsp fill` from the terminal: stdout is the completion only, errors are one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "fib.py"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coda_lsp.cli", *args], capture_output=True, text=True, timeout=300)


def test_complete_prints_steps_to_stderr_and_only_the_completion_to_stdout(tiny_model_dir, tmp_path):
    src = tmp_path / "fib.py"
    src.write_text(EXAMPLE.read_text())
    proc = run_cli("complete", f"{src}:4:9", "--show-steps", "--model", str(tiny_model_dir), "--steps", "3",
                   "--max-tokens", "6", "--device", "cpu")
    assert proc.returncode in (0, 1), proc.stderr          # 1 = the random model produced nothing usable
    steps = [line for line in proc.stderr.splitlines() if line.startswith("step ")]
    assert [line.split()[1] for line in steps] == ["1/3", "2/3", "3/3"]
    assert "step" not in proc.stdout and "loading" not in proc.stdout
    if proc.returncode == 0:
        assert proc.stdout.strip()


def test_fill_and_complete_reject_bad_positions_and_missing_models_in_one_line(tmp_path):
    src = tmp_path / "a.py"
    src.write_text("x = 1\n")
    bad = run_cli("fill", f"{src}:1:1", "--model", str(tmp_path))
    assert bad.returncode == 2 and "FILE:L:C-L:C" in bad.stderr and bad.stdout == ""
    past = run_cli("complete", f"{src}:9:1", "--model", str(tmp_path))
    assert past.returncode == 2 and "past the end" in past.stderr
    missing = run_cli("complete", f"{src}:1:5", "--model", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "--model" in missing.stderr and len(missing.stderr.strip().splitlines()) == 2


def test_cli_decoding_defaults_are_the_servers_and_can_be_turned_off():
    from coda_lsp.cli import oneshot_parser, options_from
    from coda_lsp.options import ServerOptions

    parser = oneshot_parser("complete")
    default = options_from(parser.parse_args(["a.py:1:1"]), parser)
    assert default.decode == ServerOptions().decode
    exact = options_from(parser.parse_args(["a.py:1:1", "--threshold", "none", "--cache", "none"]), parser)
    assert (exact.decode.threshold, exact.decode.cache) == (None, "none")
    for bad in (["--threshold", "1.5"], ["--cache", "full"]):
        try:
            options_from(parser.parse_args(["a.py:1:1", *bad]), parser)
        except SystemExit as e:
            assert e.code == 2
        else:
            raise AssertionError(f"{bad} was accepted")


IMPORTS_OS = ('import os\n\n\ndef describe(path):\n    """Return a short description of a path."""\n'
              '    if os.path.isdir(path):\n        return "directory"\n    name = os.path.basename(path)\n'
              '    return name\n')


def test_complete_prints_what_the_server_shows_first_for_a_file_that_imports_the_stdlib(tiny_model_dir, tmp_path):
    """The one-shot command and a real LSP client (the only open document: nothing else differs) get the
    same text, for an automatic and for an invoked request (whose first item is the greedy one too)."""
    import asyncio
    import json

    from coda_bench.lsp_client import LspClient

    src = tmp_path / "describe.py"
    src.write_text(IMPORTS_OS)
    settings = {"modelPath": str(tiny_model_dir), "device": "cpu", "dtype": "float32", "steps": 4, "maxTokens": 8,
                "minConfidence": 0, "minShownConfidence": 0, "speculate": False, "debounceMs": 0}

    async def server_items() -> list[list[str]]:
        c = await LspClient.start([sys.executable, "-m", "coda_lsp.cli", "--stdio"], str(tmp_path / "server.err"))
        try:
            await c.call("initialize", {"processId": None, "rootUri": None, "initializationOptions": settings,
                                        "capabilities": {"textDocument": {"inlineCompletion": {}}}})
            c.notify("initialized", {})
            c.notify("textDocument/didOpen", {"textDocument": {"uri": src.as_uri(), "languageId": "python",
                                                               "version": 1, "text": IMPORTS_OS}})
            while not any(s.get("state") == "ready" for s in c.statuses):
                assert not any(s.get("state") == "error" for s in c.statuses), c.statuses
                await asyncio.sleep(0.05)
            out = []
            for kind in (1, 2):   # Invoked first (nothing computed before it), then Automatic
                r = await c.call("textDocument/inlineCompletion", {
                    "textDocument": {"uri": src.as_uri()}, "position": {"line": 7, "character": 12},
                    "context": {"triggerKind": kind}})
                out.append([i["insertText"] for i in r["items"]])
            return out
        finally:
            await c.stop()

    invoked, automatic = asyncio.run(asyncio.wait_for(server_items(), 240))
    proc = run_cli("complete", f"{src}:8:13", "--model", str(tiny_model_dir), "--device", "cpu", "--dtype", "float32",
                   "--steps", "4", "--max-tokens", "8", "--min-confidence", "0", "--min-shown-confidence", "0")
    cli = proc.stdout.removesuffix("\n") if proc.returncode == 0 else None
    assert (automatic[:1] or [None])[0] == cli, (json.dumps([invoked, automatic]), proc.stderr[-500:])
    assert (invoked[:1] or [None])[0] == cli and len(invoked) <= 3, invoked
