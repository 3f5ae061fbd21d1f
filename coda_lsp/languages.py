"""Per-language facts the server needs: tree-sitter grammar, comment marker, syntax units, imports.

Grammars come from the per-language wheels (`tree-sitter-python`, ...) and are loaded lazily, once
per process, so starting the server never pays for languages nobody opens. A language without a
grammar (or whose wheel is missing) still gets a `LanguageSpec` with `grammar=None`: context
extraction then falls back to line boundaries instead of failing.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass, field
from typing import Optional

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LanguageSpec:
    name: str                                  # canonical LSP languageId ("python", "typescript", ...)
    comment: str                               # line-comment marker used to mark extra context
    module: Optional[str] = None               # grammar wheel module ("tree_sitter_python"), None = no grammar
    function: str = "language"                 # function of that module returning the grammar pointer
    import_types: frozenset[str] = field(default_factory=frozenset)  # node types holding imports
    block_openers: tuple[str, ...] = ("{",)    # a line ending with one of these opens a block


_C_LIKE_IMPORTS = frozenset({"preproc_include", "using_declaration"})
SPECS: dict[str, LanguageSpec] = {
    "python": LanguageSpec("python", "#", "tree_sitter_python",
                           import_types=frozenset({"import_statement", "import_from_statement", "future_import_statement"}),
                           block_openers=(":",)),
    "javascript": LanguageSpec("javascript", "//", "tree_sitter_javascript",
                               import_types=frozenset({"import_statement"})),
    "typescript": LanguageSpec("typescript", "//", "tree_sitter_typescript", "language_typescript",
                               import_types=frozenset({"import_statement"})),
    "typescriptreact": LanguageSpec("typescriptreact", "//", "tree_sitter_typescript", "language_tsx",
                                    import_types=frozenset({"import_statement"})),
    "go": LanguageSpec("go", "//", "tree_sitter_go", import_types=frozenset({"import_declaration"})),
    "rust": LanguageSpec("rust", "//", "tree_sitter_rust",
                         import_types=frozenset({"use_declaration", "extern_crate_declaration"})),
    "java": LanguageSpec("java", "//", "tree_sitter_java", import_types=frozenset({"import_declaration"})),
    "c": LanguageSpec("c", "//", "tree_sitter_c", import_types=_C_LIKE_IMPORTS),
    "cpp": LanguageSpec("cpp", "//", "tree_sitter_cpp", import_types=_C_LIKE_IMPORTS),
    "lua": LanguageSpec("lua", "--", "tree_sitter_lua", block_openers=("then", "do", "function", "(", "{")),
}
ALIASES = {"javascriptreact": "javascript", "jsx": "javascript", "js": "javascript", "ts": "typescript",
           "tsx": "typescriptreact", "py": "python", "golang": "go", "c++": "cpp", "cuda": "cpp", "objective-c": "c"}
EXTENSIONS = {".py": "python", ".pyi": "python", ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript",
              ".jsx": "javascript", ".ts": "typescript", ".mts": "typescript", ".tsx": "typescriptreact",
              ".go": "go", ".rs": "rust", ".java": "java", ".c": "c", ".h": "c", ".cc": "cpp", ".cpp": "cpp",
              ".cxx": "cpp", ".hpp": "cpp", ".hh": "cpp", ".lua": "lua"}
# Languages without a grammar: only their comment marker matters (line-based context).
_COMMENTS = {"ruby": "#", "shellscript": "#", "sh": "#", "bash": "#", "yaml": "#", "toml": "#", "r": "#",
             "perl": "#", "php": "//", "csharp": "//", "kotlin": "//", "swift": "//", "scala": "//", "dart": "//",
             "zig": "//", "sql": "--", "haskell": "--"}

_lock = threading.Lock()
_grammars: dict[str, object] = {}


def canonical_language(language_id: str | None, path: str = "") -> str:
    """LSP languageId (or file extension when the id is empty/unknown) -> canonical name."""
    lid = (language_id or "").strip().lower()
    lid = ALIASES.get(lid, lid)
    if lid in SPECS or lid in _COMMENTS:
        return lid
    dot = path.rfind(".")
    if dot >= 0:
        return EXTENSIONS.get(path[dot:].lower(), lid or "plaintext")
    return lid or "plaintext"


def spec_for(language: str) -> LanguageSpec:
    """Spec for a canonical language; unknown languages get a grammar-less spec."""
    return SPECS.get(language) or LanguageSpec(language, _COMMENTS.get(language, "#"))


def grammar_for(language: str):
    """The `tree_sitter.Language` for a canonical language, or None (no wheel / unknown)."""
    spec = SPECS.get(language)
    if spec is None or spec.module is None:
        return None
    with _lock:
        if language in _grammars:
            return _grammars[language]
        try:
            from tree_sitter import Language
            mod = importlib.import_module(spec.module)
            grammar = Language(getattr(mod, spec.function)())
        except Exception as exc:  # missing wheel or ABI mismatch: line-based context instead
            log.warning("no tree-sitter grammar for %s (%s): using line-based context", language, exc)
            grammar = None
        _grammars[language] = grammar
        return grammar


def new_parser(language: str):
    """A fresh `tree_sitter.Parser` for the language, or None."""
    grammar = grammar_for(language)
    if grammar is None:
        return None
    from tree_sitter import Parser
    return Parser(grammar)
