"""`coda-lsp`: the language server, and one-shot completion / fill from the terminal.

Usage:
    coda-lsp [--model PATH] [--device auto|cpu|cuda|mps] [--dtype auto|float32|bfloat16]
             [--stdio | --tcp [HOST:]PORT] [--log-file PATH]          # serve LSP (stdio by default)
    coda-lsp complete FILE:LINE:COL [--show-steps] [--model PATH]     # print a completion at a position
    coda-lsp fill FILE:L:C-L:C [--show-steps] [--model PATH]          # print the rewrite of a range
    coda-lsp models [FOLDER...]                                       # list models in the HF cache / folders
    coda-lsp models [FOLDER...]                                       # list models in the HF cache / folders

Positions are 1-based, like editors show them (COL counts characters). stdout gets only the
completion text; progress, denoise steps (--show-steps) and errors go to stderr. Without --model
the embedded default model is used; --model also takes a Hugging Face repo id from the local cache. Example (CPU):
    coda-lsp complete examples/fib.py:4:9 --show-steps
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from coda_lsp.cli_options import add_setting_flags, options_from

log = logging.getLogger("coda_lsp")


def server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coda-lsp", description="CoDA diffusion code completion language server. "
                                "Subcommands: `coda-lsp complete FILE:LINE:COL`, `coda-lsp fill FILE:L:C-L:C`, "
                                "`coda-lsp models [FOLDER...]`.")
    add_setting_flags(p)
    t = p.add_mutually_exclusive_group()
    t.add_argument("--stdio", action="store_true", help="talk LSP over stdin/stdout (default)")
    t.add_argument("--tcp", metavar="[HOST:]PORT", help="listen on TCP (host 127.0.0.1 unless given)")
    p.add_argument("--log-file", metavar="PATH", help="write logs here instead of stderr")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def oneshot_parser(command: str) -> argparse.ArgumentParser:
    where = "FILE:LINE:COL" if command == "complete" else "FILE:L:C-L:C"
    p = argparse.ArgumentParser(prog=f"coda-lsp {command}",
                                description=f"Print the model's {'completion' if command == 'complete' else 'fill'} "
                                            f"at {where} (1-based) to stdout.")
    p.add_argument("where", metavar=where)
    add_setting_flags(p)
    p.add_argument("--show-steps", action="store_true", help="print every denoise step to stderr")
    return p


class UsageError(Exception):
    pass


def parse_where(where: str, is_range: bool) -> tuple[Path, tuple[int, int], Optional[tuple[int, int]]]:
    """'FILE:L:C' or 'FILE:L:C-L:C' -> (path, (line, col), end) with 1-based numbers."""
    try:
        if is_range:
            head, tail = where.rsplit("-", 1)
            path, l1, c1 = head.rsplit(":", 2)
            l2, c2 = tail.split(":")
            return Path(path), (int(l1), int(c1)), (int(l2), int(c2))
        path, l1, c1 = where.rsplit(":", 2)
        return Path(path), (int(l1), int(c1)), None
    except ValueError:
        form = "FILE:L:C-L:C" if is_range else "FILE:LINE:COL"
        raise UsageError(f"cannot read {where!r}: expected {form} with 1-based numbers, e.g. examples/fib.py:4:9") from None


def _offset(doc, line: int, col: int) -> int:
    if line < 1 or col < 1:
        raise UsageError(f"positions are 1-based: got line {line}, column {col}")
    if line > doc.line_count:
        raise UsageError(f"line {line} is past the end of the file ({doc.line_count} lines)")
    text = doc.line_text(line - 1)
    return doc.line_starts[line - 1] + min(col - 1, len(text))


def run_oneshot(command: str, argv: Sequence[str]) -> int:
    """`coda-lsp complete|fill`: the server's four stages (coda_lsp.pipeline) on one file, without a server."""
    parser = oneshot_parser(command)
    args = parser.parse_args(argv)
    options = options_from(args, parser)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="coda-lsp: %(message)s")
    from coda_lsp.documents import Document
    try:
        path, start, end = parse_where(args.where, command == "fill")
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read {path}: {exc}") from None
        doc = Document(path.resolve().as_uri(), text, 0, "")
        a = _offset(doc, *start)
        b = _offset(doc, *end) if end else None
        if b is not None and b < a:
            a, b = b, a
    except UsageError as exc:
        print(f"coda-lsp {command}: {exc}", file=sys.stderr)
        return 2
    from coda_lsp.loading import ModelUnavailable, open_engine
    from coda_lsp.pipeline import run_once
    t0 = time.perf_counter()
    try:
        print(f"coda-lsp: loading {options.model_path or 'the default model'} ...", file=sys.stderr)
        lm = open_engine(options)
    except ModelUnavailable as exc:
        print(f"coda-lsp {command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:   # ModelLoadError and friends carry their own fix
        print(f"coda-lsp {command}: model not loaded: {exc}", file=sys.stderr)
        return 2
    where = f"remote engine {options.engine}" if options.engine else \
        f"{lm.describe()} loaded in {lm.load_s:.1f}s"
    print(f"coda-lsp: {where}", file=sys.stderr)

    def show(partial) -> None:
        text, step, steps, masked, _done = partial
        shown = text.replace("\n", "\\n")
        print(f"step {step:>3}/{steps} masked {masked:>3} | {shown}", file=sys.stderr)

    t1 = time.perf_counter()
    try:
        ctx, items = run_once(lm, doc, a, b, options, on_step=show if args.show_steps else None)
    except (ValueError, ConnectionError) as exc:   # ConnectionError: the remote engine failed (one line)
        print(f"coda-lsp {command}: {exc}", file=sys.stderr)
        return 1
    print(f"coda-lsp: {ctx.kind} hole of {ctx.length} tokens decoded in {time.perf_counter() - t1:.2f}s "
          f"(total {time.perf_counter() - t0:.2f}s)", file=sys.stderr)
    if not items:
        gate = "" if options.gate.off else (" (or nothing it is sure of: --min-confidence 0 --min-shown-confidence 0 "
                                            "turns the confidence gate off)")
        print(f"coda-lsp: the model produced nothing usable here{gate}", file=sys.stderr)
        return 1
    sys.stdout.write(items[0] + ("" if items[0].endswith("\n") else "\n"))
    return 0


class OneLineFilter(logging.Filter):
    """Bad client input must cost one clear log line: pygls' tracebacks are folded into their last line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("pygls"):
            msg = record.getMessage().split("\n", 1)[0]
            if record.exc_info and record.exc_info[1] is not None:
                exc = record.exc_info[1]
                msg = f"{msg}: {type(exc).__name__}: {exc}"
                record.exc_info = None
                record.exc_text = None
            record.msg, record.args = msg, ()
        return True


def setup_logging(log_file: Optional[str], level: str) -> None:
    handler: logging.Handler = logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(OneLineFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("pygls").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def serve(argv: Sequence[str]) -> int:
    parser = server_parser()
    args = parser.parse_args(argv)
    options = options_from(args, parser)
    setup_logging(args.log_file, args.log_level)
    from coda_lsp.server import build_server
    server = build_server(options)
    if args.tcp:
        host, _, port = args.tcp.rpartition(":")
        try:
            port_num = int(port)
        except ValueError:
            print(f"coda-lsp: --tcp wants [HOST:]PORT, got {args.tcp!r}", file=sys.stderr)
            return 2
        log.info("listening on %s:%d", host or "127.0.0.1", port_num)
        server.start_tcp(host or "127.0.0.1", port_num)
    else:
        server.start_io()
    return 0


# `coda-lsp NAME ...`: NAME -> "module:function" taking (name, argv) and returning an exit code.
# Each subcommand lives in its own module; this table is the only place that lists them.
SUBCOMMANDS = {
    "complete": "coda_lsp.cli:run_oneshot",
    "fill": "coda_lsp.cli:run_oneshot",
    "calibrate": "coda_lsp.calibrate:main",
    "stats": "coda_lsp.stats:main",
    "models": "coda_lsp.models_cmd:main",
    "quantize": "coda_lsp.quantize_cmd:main",
    "serve": "coda_lsp.http.serve:main",
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SUBCOMMANDS:
        from importlib import import_module
        module, _, func = SUBCOMMANDS[argv[0]].partition(":")
        return getattr(import_module(module), func)(argv[0], argv[1:])
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main())
