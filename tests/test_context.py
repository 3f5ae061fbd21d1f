"""Context extraction: syntax-boundary cuts within the budget, hole shapes, extra context, fallbacks."""

from __future__ import annotations

import inspect
import json
import textwrap

import pytest

from coda_lsp.context import ContextConfig, build_context, estimate_tokens
from coda_lsp.documents import Document, Pos


def stdlib_doc(module) -> Document:
    return Document(f"file:///lib/{module.__name__}.py", inspect.getsource(module), 1, "python")


def at(doc: Document, needle: str, delta: int = 0) -> int:
    return doc.text.index(needle) + delta


@pytest.mark.parametrize("module", [json.decoder, textwrap])
def test_stdlib_cuts_fall_on_statement_boundaries_within_budget(module):
    doc = stdlib_doc(module)
    lines = doc.text.split("\n")
    for line_no in range(5, len(lines) - 5, max(1, len(lines) // 25)):
        start = doc.offset_at(Pos(line_no, len(lines[line_no])))
        ctx = build_context(doc, start, cfg=ContextConfig(context_tokens=200))
        assert estimate_tokens(ctx.prefix) + estimate_tokens(ctx.suffix) + estimate_tokens(ctx.extra) <= 200 + 2
        cut = start - len(ctx.prefix)
        assert cut == 0 or doc.text[cut - 1] in "\n"          # the prefix starts at a line start ...
        first = doc.text[cut:].split("\n", 1)[0]
        assert cut == start - len(ctx.line_prefix) or first.strip()   # ... of a real statement, not a blank
        end = ctx.end + len(ctx.suffix)
        assert end == len(doc.text) or doc.text[end] in "\r\n"     # the suffix ends at a line end


def test_blank_line_in_a_function_is_a_block_hole_with_its_indent():
    doc = stdlib_doc(textwrap)
    src = "def f(n):\n    if n < 2:\n        \n    return n\n"
    doc = Document("file:///f.py", src, 1, "python")
    ctx = build_context(doc, doc.offset_at(Pos(2, 8)))
    assert ctx.kind == "block" and ctx.indent == "        " and ctx.length == ContextConfig().max_tokens
    assert ctx.prefix == src[:src.index("        \n") + 8] and ctx.suffix.startswith("\n    return n")


def test_end_of_a_block_opener_line_is_a_block_hole_one_level_deeper():
    doc = Document("file:///f.py", "class A:\n    def f(self):\n", 1, "python")
    ctx = build_context(doc, doc.offset_at(Pos(1, 17)))
    assert ctx.kind == "block" and ctx.indent == "        "


def test_rest_of_line_closers_are_covered_by_the_replace_range():
    doc = Document("file:///f.js", "const x = foo(bar, );\n", 1, "javascript")
    start = at(doc, ", )", 2)
    ctx = build_context(doc, start)
    assert ctx.kind == "line" and doc.text[ctx.start:ctx.end] == ");" and ctx.suffix.strip() == ""
    assert ctx.length == ContextConfig().line_tokens


def test_mid_line_hole_keeps_the_rest_of_the_line_in_the_suffix():
    doc = Document("file:///f.go", "package main\n\nfunc main() {\n\tx := add(1, 2)\n}\n", 1, "go")
    start = at(doc, "add")
    ctx = build_context(doc, start)
    assert ctx.kind == "line" and ctx.end == start and ctx.suffix.startswith("add(1, 2)")


def test_selection_hole_length_follows_the_selection():
    doc = stdlib_doc(textwrap)
    start, end = at(doc, "def dedent"), at(doc, "def indent")
    ctx = build_context(doc, start, end, cfg=ContextConfig(max_tokens=64))
    assert ctx.kind == "selection" and ctx.replaced == doc.text[start:end]
    assert 8 <= ctx.length <= 4 * 64


@pytest.mark.parametrize("language,uri,src,needle", [
    ("javascript", "a.js", "import x from 'y';\nfunction f(a) {\n  return a + 1;\n}\n", "return"),
    ("typescript", "a.ts", "function f(a: number): number {\n  return a;\n}\n", "return"),
    ("go", "a.go", "package m\nfunc f(a int) int {\n\treturn a\n}\n", "return"),
    ("rust", "a.rs", "use std::io;\nfn f(a: i32) -> i32 {\n    a + 1\n}\n", "a + 1"),
    ("java", "A.java", "class A {\n  int f(int a) {\n    return a;\n  }\n}\n", "return"),
    ("c", "a.c", "#include <stdio.h>\nint f(int a) {\n  return a;\n}\n", "return"),
    ("cpp", "a.cpp", "#include <vector>\nint f(int a) {\n  return a;\n}\n", "return"),
    ("lua", "a.lua", "local function f(a)\n  return a\nend\n", "return"),
    ("haskell", "a.hs", "f :: Int -> Int\nf a = a + 1\n", "a + 1"),
])
def test_every_language_gives_a_context_and_unknown_ones_fall_back_to_lines(language, uri, src, needle):
    doc = Document(f"file:///{uri}", src, 1, language)
    assert (doc.tree is None) == (language == "haskell")
    start = at(doc, needle)
    ctx = build_context(doc, start)
    assert ctx.prefix + ctx.replaced + ctx.suffix == src.rstrip("\n") or src.startswith(ctx.prefix)
    assert ctx.prefix.endswith(doc.text[doc.line_starts[doc.position_at(start).line]:start])


def test_imports_dropped_by_the_cut_come_back_as_marked_extra_context():
    body = "\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(200))
    src = "import os\nfrom typing import Any\n\n" + body + "\ndef g():\n    \n"
    doc = Document("file:///pkg/mod.py", src, 1, "python")
    ctx = build_context(doc, len(src) - 1, cfg=ContextConfig(context_tokens=200))
    assert "imports" in ctx.extra_parts
    assert ctx.extra.startswith("# Imports of pkg/mod.py:\nimport os\nfrom typing import Any")
    assert not ctx.prefix.startswith("import os")


def test_other_open_documents_are_commented_snippets_most_recent_first():
    cur = Document("file:///w/cur.go", "package m\n\nfunc main() {\n\t\n}\n", 1, "go")
    old = Document("file:///w/old.go", "package m\nfunc Old() int { return 1 }\n", 1, "go")
    new = Document("file:///w/new.go", "package m\nfunc New() int { return 2 }\n", 1, "go")
    ctx = build_context(cur, cur.offset_at(Pos(3, 1)), others=[new, old], cfg=ContextConfig(context_tokens=400))
    assert ctx.extra_parts == ["path:file:///w/new.go", "path:file:///w/old.go"]
    assert ctx.extra.index("// Path: w/new.go") < ctx.extra.index("// Path: w/old.go")
    assert "// func New() int { return 2 }" in ctx.extra


def test_huge_and_binary_documents_still_give_a_bounded_context():
    src = "x = 1\n" * 1_000_000
    doc = Document("file:///big.py", src, 1, "python")
    assert doc.tree is None
    ctx = build_context(doc, len(src) // 2, cfg=ContextConfig(context_tokens=100))
    assert 0 < len(ctx.prefix) + len(ctx.suffix) <= 100 * 3 + 10


def test_context_budgets_default_to_the_server_options():
    from coda_lsp import pipeline
    from coda_lsp.options import LINE_TOKENS, ServerOptions
    opts = ServerOptions()
    assert ContextConfig() == pipeline.context_config(opts)
    assert (ContextConfig().context_tokens, ContextConfig().max_tokens) == (opts.context_tokens, opts.max_tokens)
    assert ContextConfig(max_tokens=5).line_tokens == 5 and ContextConfig(max_tokens=500).line_tokens == LINE_TOKENS
