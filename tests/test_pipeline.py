"""The four stages of a completion request, each alone, and the whole chain pinned to the outputs it gave
before the pipeline was split out of the service (same inputs -> same completions)."""

from __future__ import annotations

import asyncio
import json
import os
from dataclasses import replace
from pathlib import Path

import pytest

from coda_lsp import pipeline
from coda_lsp.documents import Document, Pos
from coda_lsp.options import LINE_TOKENS, ServerOptions

FIXTURE = Path(__file__).parent / "fixtures" / "pinned_completions.json"
REPO = Path(__file__).resolve().parent.parent
# the files behind fixtures/pinned_completions.json (captured from the service before the refactor)
PINNED_FILES = {
    "fib.py": (REPO / "examples" / "fib.py").read_text(encoding="utf-8"),
    "ops.py": "import os\n\n\ndef list_py(root):\n    out = []\n    for name in os.listdir(root):\n"
              "        if name.endswith('.py'):\n            \n    return out\n\n\ndef total(xs):\n    s = 0\n"
              "    for x in xs:\n        s += \n    return s\n",
    "app.js": "function add(a, b) {\n  return \n}\n\nconsole.log(add(1, 2));\n",
}


def test_should_complete_says_why_not():
    opts = ServerOptions(enabled_languages=("python",))
    assert pipeline.should_complete(Document("file:///a.py", "x = 1\n", 1, "python"), opts) is None
    assert "unknown" in pipeline.should_complete(None, opts)
    assert "binary" in pipeline.should_complete(Document("file:///b.py", "a\x00b", 1, "python"), opts)
    assert "not enabled" in pipeline.should_complete(Document("file:///c.go", "package c\n", 1, "go"), opts)


def test_build_context_takes_its_budgets_from_the_options():
    doc = Document("file:///a.py", "def f(x):\n    \n    return x\n", 1, "python")
    at = doc.text.index("    \n") + 4
    block = pipeline.build_context(doc, at, None, replace(ServerOptions(), max_tokens=40))
    assert block.kind == "block" and block.length == 40
    line_doc = Document("file:///b.py", "x = foo(\n", 1, "python")
    line = pipeline.build_context(line_doc, len("x = foo("), None, replace(ServerOptions(), max_tokens=40))
    assert line.kind == "line" and line.length == LINE_TOKENS


def test_decode_for_fits_the_hole_and_only_blocks_with_a_cache():
    editor = ServerOptions().decode
    assert pipeline.decode_for(editor, 4, 1).steps == 4                    # never more steps than tokens
    assert pipeline.decode_for(editor, 48, 1) == editor                     # the preset as it is
    assert pipeline.decode_for(editor, 48, 3).temperature == 0.7            # distinct candidates need sampling
    assert pipeline.decode_for(replace(editor, cache="none"), 48, 1).block_length is None


def test_fit_budget_trims_extra_first_then_the_far_ends():
    extra, prefix, suffix = list(range(10)), list(range(100, 120)), list(range(200, 220))
    assert pipeline.fit_budget(extra, prefix, suffix, 100) == (extra, prefix, suffix)
    e, p, s = pipeline.fit_budget(extra, prefix, suffix, 45)
    assert e == [5, 6, 7, 8, 9] and p == prefix and s == suffix
    e, p, s = pipeline.fit_budget(extra, prefix, suffix, 30)
    assert e == [] and len(p) + len(s) == 30 and p == prefix[-len(p):] and s == suffix[:len(s)]


def test_postprocess_cleans_and_drops_duplicates_and_empties():
    doc = Document("file:///a.py", "x = foo(\n", 1, "python")
    ctx = pipeline.build_context(doc, len("x = foo("), None, ServerOptions())
    assert pipeline.postprocess(["1, 2)\nprint(x)", "1, 2)", "   ", "3)"], ctx) == ["1, 2)", "3)"]


def test_run_once_refuses_a_document_it_should_not_complete(tiny_model_dir):
    from coda_lsp.loading import load_engine
    lm = load_engine(ServerOptions(model_path=str(tiny_model_dir), device="cpu", dtype="float32", threads=1))
    with pytest.raises(ValueError, match="binary"):
        pipeline.run_once(lm, Document("file:///b.py", "a\x00b", 1, "python"), 1, None, ServerOptions())
    steps = []
    ctx, items = pipeline.run_once(lm, Document("file:///a.py", "def f(x):\n    \n", 1, "python"), 14, None,
                                   replace(ServerOptions(), max_tokens=8), on_step=steps.append)
    assert ctx.kind == "block" and steps and steps[-1][4] is True and isinstance(items, list)


async def _service_items(cases: list[dict]) -> list:
    """Each hole as an editor asks for it: an automatic request, then an invoked one (greedy item first)."""
    from coda_lsp.service import CompletionService
    # as captured: fp32 on one thread, the confidence gate (issue 16) off. Re-captured in fp32 when the kernel
    # became a measured choice: the bf16 capture held only on CPUs without AMX (AMX rounds bf16 sums otherwise)
    svc = CompletionService(ServerOptions(speculate=False, debounce_ms=0, dtype="float32", quantize="none",
                                          threads=1, min_confidence=0, min_shown_confidence=0))
    await svc.load()
    assert svc.ready, svc.message
    out = []
    try:
        for case in cases:
            name = case["file"]
            uri = f"file:///pin/{name}"
            if svc.docs.get(uri) is None:
                svc.docs.open(uri, PINNED_FILES[name], 1, "javascript" if name.endswith(".js") else "python")
            r = await svc.complete(uri, Pos(case["line"], case["col"]), invoked=case["invoked"])
            # an invoked request now returns several candidates to cycle through (issue 16), the pinned
            # greedy item first: compare that one
            out.append((r.items[:1] if case["invoked"] else r.items) if r else None)
            if case["invoked"]:
                svc.close(uri)
                svc.result_cache.clear()
    finally:
        svc.shutdown()
    return out


def test_server_completions_are_the_same_as_before_the_pipeline_split():
    """The default model through the service: exactly the items captured before the refactor.

    Re-capture (only after checking a diff is intended): CODA_RECAPTURE=1 pytest tests/test_pipeline.py -k same"""
    cases = json.loads(FIXTURE.read_text(encoding="utf-8"))
    got = asyncio.run(_service_items(cases))
    if os.environ.get("CODA_RECAPTURE"):
        FIXTURE.write_text(json.dumps([{**c, "items": g} for c, g in zip(cases, got)], indent=1) + "\n")
    assert got == [c["items"] for c in cases]
