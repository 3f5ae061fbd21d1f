"""Next-edit evaluation cases from real held-out code (`coda-bench next-edit` reads them).

The default model's held-out split (train/recipes/default_model/build_data.py) keeps out whole
distributions (click among them) and the stdlib top-level modules with md5(name)[0] % 37 == 0
(`_pyio`, `pickletools`, `token`, `tomllib`, `idlelib`). Cases are cut from those files with the
tree-sitter Python grammar the server uses:
- rename: a parameter or local variable renamed at its definition; expected: its other uses in the window;
- signature: a parameter appended to a `def`; expected: the argument passed at a call site in the window;
- comment / string: a word of a comment or string literal changed; expected: no suggestion.
Every expected edit is trimmed like the server trims its own (`coda_lsp.next_edit.minimal_edit`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

RENAMES = ("item", "value", "entry", "record", "target", "current", "element", "piece")
NEW_PARAMS = ("verbose", "timeout", "strict", "encoding")
HELDOUT_STDLIB_MOD = 37   # the rule of build_data.py (HELDOUT_STDLIB_MOD); the recipe is a script, not a package
KINDS = ("rename", "signature", "comment", "string")


@dataclass
class Case:
    kind: str
    source: str
    text: str                           # the file before the user's edit
    edit: tuple[int, int, str]          # the user's edit of `text`
    cursor: int                         # offset in the edited text (end of the user's edit)
    expected: list[tuple[int, int, str]] = field(default_factory=list)   # in the edited text

    @property
    def edited(self) -> str:
        a, b, t = self.edit
        return self.text[:a] + t + self.text[b:]


def heldout_files() -> list[Path]:
    """The held-out Python files on this machine, sorted (the same cases every run)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    out = []
    for p in sorted(stdlib.iterdir()):
        top = p.name.removesuffix(".py")
        if (p.suffix == ".py" or p.is_dir()) and hashlib.md5(top.encode()).digest()[0] % HELDOUT_STDLIB_MOD == 0:
            out += [p] if p.is_file() else sorted(p.glob("*.py"))
    spec = importlib.util.find_spec("click")
    if spec is not None and spec.origin:
        out += sorted(Path(spec.origin).parent.glob("*.py"))
    return [p for p in out if 500 < p.stat().st_size < 400_000]


def _nodes(node, kind: str) -> Iterator:
    stack = [node]
    while stack:
        n = stack.pop()
        if n.type == kind:
            yield n
        stack.extend(reversed(n.children))


def _text(src: bytes, node) -> str:
    return src[node.start_byte:node.end_byte].decode("utf-8", "replace")


def _char(src: bytes, byte: int) -> int:
    return len(src[:byte].decode("utf-8", "replace"))


def _in_window(text: str, cursor: int, offset: int, lines: int) -> bool:
    line, at = text.count("\n", 0, cursor), text.count("\n", 0, offset)
    first = max(0, line - lines // 3)
    return first <= at < first + lines


def _shift(case_edit: tuple[int, int, str], spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    a, b, t = case_edit
    d = len(t) - (b - a)
    return [(s + d, e + d, x) if s >= b else (s, e, x) for s, e, x in spans]


def _minimal(text: str, spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    from coda_lsp.next_edit import minimal_edit
    return [minimal_edit(text[s:e], x, s) for s, e, x in spans]


def _param_names(src: bytes, params) -> list:
    out = []
    for child in params.named_children:
        node = child if child.type == "identifier" else child.child_by_field_name("name") \
            if child.type in ("default_parameter", "typed_default_parameter") else \
            (child.named_children[0] if child.type == "typed_parameter" and child.named_children else None)
        if node is not None and node.type == "identifier":
            out.append(node)
    return out


def _uses(src: bytes, body, name: str) -> list:
    out = []
    for n in _nodes(body, "identifier"):
        if _text(src, n) != name:
            continue
        p = n.parent
        if p is not None and p.type == "attribute" and p.child_by_field_name("attribute") == n:
            continue
        if p is not None and p.type == "keyword_argument" and p.child_by_field_name("name") == n:
            continue
        out.append(n)
    return out


def rename_cases(path: Path, tree, src: bytes, text: str, lines: int) -> Iterator[Case]:
    for fn in _nodes(tree.root_node, "function_definition"):
        body, params = fn.child_by_field_name("body"), fn.child_by_field_name("parameters")
        if body is None or params is None:
            continue
        fn_text = _text(src, fn)
        for node in _param_names(src, params):
            name = _text(src, node)
            if name in ("self", "cls") or len(name) < 2:
                continue
            new = next((r for r in RENAMES if r not in fn_text), None)
            if new is None:
                continue
            a, b = _char(src, node.start_byte), _char(src, node.end_byte)
            edit = (a, b, new)
            cursor = a + len(new)
            edited = text[:a] + new + text[b:]
            uses = [(_char(src, u.start_byte), _char(src, u.end_byte), new) for u in _uses(src, body, name)]
            uses = [u for u in _shift(edit, uses) if _in_window(edited, cursor, u[0], lines)]
            if len(uses) >= 2:
                yield Case("rename", path.name, text, edit, cursor, _minimal(edited, uses))
                break   # one per function


def signature_cases(path: Path, tree, src: bytes, text: str, lines: int) -> Iterator[Case]:
    calls: dict[str, list] = {}
    for call in _nodes(tree.root_node, "call"):
        f = call.child_by_field_name("function")
        name = _text(src, f.child_by_field_name("attribute")) if f is not None and f.type == "attribute" else \
            _text(src, f) if f is not None and f.type == "identifier" else None
        if name:
            calls.setdefault(name, []).append(call)
    for fn in _nodes(tree.root_node, "function_definition"):
        params, name_node = fn.child_by_field_name("parameters"), fn.child_by_field_name("name")
        if params is None or name_node is None:
            continue
        ptext = _text(src, params)
        if "*" in ptext or "/" in ptext or "\n" in ptext or "=" in ptext:
            continue
        fn_text = _text(src, fn)
        new = next((p for p in NEW_PARAMS if p not in fn_text), None)
        if new is None:
            continue
        close = _char(src, params.end_byte) - 1          # the ")" of the signature
        inner = ptext[1:-1].strip()
        insert = f", {new}" if inner else new
        edit = (close, close, insert)
        cursor = close + len(insert)
        edited = text[:close] + insert + text[close:]
        for call in calls.get(_text(src, name_node), []):
            args = call.child_by_field_name("arguments")
            if args is None or args.type != "argument_list" or "\n" in _text(src, args):
                continue
            if "*" in _text(src, args) or "=" in _text(src, args):
                continue
            arg_close = _char(src, args.end_byte) - 1
            has_args = _text(src, args)[1:-1].strip() != ""
            method = "self" in ptext.split(",")[0]
            n_params = len([p for p in inner.split(",") if p.strip()]) - (1 if method else 0)
            n_args = len([a for a in _text(src, args)[1:-1].split(",") if a.strip()])
            if n_args != n_params or arg_close == close:
                continue
            exp = _shift(edit, [(arg_close, arg_close, f", {new}" if has_args else new)])
            if _in_window(edited, cursor, exp[0][0], lines):
                yield Case("signature", path.name, text, edit, cursor, exp)
                break


def control_cases(path: Path, tree, src: bytes, text: str, kind: str) -> Iterator[Case]:
    import re
    node_kind = "comment" if kind == "comment" else "string_content"
    for node in _nodes(tree.root_node, node_kind):
        body = _text(src, node)
        m = re.search(r"\b[a-z]{5,}\b", body)
        if m is None or "\n" in body[:m.end()]:
            continue
        a = _char(src, node.start_byte) + m.start()
        word = m.group(0)
        new = "important" if word != "important" else "relevant"
        yield Case(kind, path.name, text, (a, a + len(word), new), a + len(new), [])


def build_cases(per_kind: dict[str, int], lines: int, files: Optional[list[Path]] = None) -> list[Case]:
    """Up to `per_kind[kind]` cases of each kind, spread over the held-out files (at most 2 per file and kind)."""
    from coda_lsp.languages import new_parser
    parser = new_parser("python")
    out: dict[str, list[Case]] = {k: [] for k in KINDS}
    for path in files or heldout_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        src = text.encode("utf-8")
        tree = parser.parse(src)
        gens = {"rename": rename_cases(path, tree, src, text, lines),
                "signature": signature_cases(path, tree, src, text, lines),
                "comment": control_cases(path, tree, src, text, "comment"),
                "string": control_cases(path, tree, src, text, "string")}
        for kind, gen in gens.items():
            for k, case in enumerate(gen):
                if len(out[kind]) >= per_kind.get(kind, 0) or k >= 2:
                    break
                out[kind].append(case)
        if all(len(out[k]) >= per_kind.get(k, 0) for k in KINDS):
            break
    return [c for k in KINDS for c in out[k]]
