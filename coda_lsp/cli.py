"""`coda-lsp`: the language server, and one-shot completion / fill from the terminal.

Usage:
    coda-lsp [--model PATH] [--device auto|cpu|cuda|mps] [--dtype auto|float32|bfloat16]
             [--stdio | --tcp [HOST:]PORT] [--log-file PATH]          # serve LSP (stdio by default)
    coda-lsp complete FILE:LINE:COL [--show-steps] [--model PATH]     # print a completion at a position
    coda-lsp fill FILE:L:C-L:C [--show-steps] [--model PATH]          # print the rewrite of a range

Positions are 1-based, like editors show them (COL counts characters). stdout gets only the
completion text; progress, denoise steps (--show-steps) and errors go to stderr. Without --model
the embedded default model is used. Example (CPU):
    coda-lsp complete examples/fib.py:4:9 --show-steps
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from coda_lsp.options import ALGORITHMS, DEVICES, DTYPES, ServerOptions

log = logging.getLogger("coda_lsp")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="PATH", help="CoDA model directory (default: the embedded default model)")
    p.add_argument("--device", default="auto", choices=DEVICES)
    p.add_argument("--dtype", default="auto", choices=DTYPES)
    p.add_argument("--steps", type=int, default=ServerOptions.steps, help="max denoise steps per hole")
    p.add_argument("--max-tokens", type=int, default=ServerOptions.max_tokens, help="length budget of a block hole")
    p.add_argument("--algorithm", default=ServerOptions.algorithm, choices=ALGORITHMS)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--threshold", type=_threshold, default=ServerOptions.threshold,
                   help="confidence threshold for parallel decoding, 'none' for the fixed schedule only "
                        f"(default {ServerOptions.threshold})")
    p.add_argument("--cache", default=ServerOptions.cache, choices=("none", "prefix", "dual"),
                   help=f"context K/V reuse within a block; none = exact (default {ServerOptions.cache})")
    p.add_argument("--block-length", type=int, default=ServerOptions.block_length,
                   help=f"with a cache, decode left to right in blocks of this many tokens (default {ServerOptions.block_length})")
    p.add_argument("--context-tokens", type=int, default=ServerOptions.context_tokens)
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for the model (default: OMP_NUM_THREADS, else half the cores, so a busy core "
                        "does not stall every step)")


def _threshold(value: str) -> Optional[float]:
    if value.lower() == "none":
        return None
    t = float(value)
    if not 0.0 < t <= 1.0:
        raise argparse.ArgumentTypeError("a threshold is in (0, 1], or 'none'")
    return t


def server_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coda-lsp", description="CoDA diffusion code completion language server. "
                                "Subcommands: `coda-lsp complete FILE:LINE:COL`, `coda-lsp fill FILE:L:C-L:C`.")
    _common(p)
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
    _common(p)
    p.add_argument("--show-steps", action="store_true", help="print every denoise step to stderr")
    return p


def options_from(args: argparse.Namespace) -> ServerOptions:
    return ServerOptions(model_path=args.model, device=args.device, dtype=args.dtype, steps=max(1, args.steps),
                         max_tokens=max(1, args.max_tokens), algorithm=args.algorithm, temperature=args.temperature,
                         threshold=args.threshold, cache=args.cache, block_length=max(1, args.block_length),
                         context_tokens=max(16, args.context_tokens),
                         threads=max(1, args.threads) if args.threads else None)


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
    args = oneshot_parser(command).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="coda-lsp: %(message)s")
    from coda_lsp.context import build_context
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
    options = options_from(args)
    from coda_lsp.service import InfillJob, ModelUnavailable, clean_candidates, load_engine, CompletionService
    svc = CompletionService(options)
    t0 = time.perf_counter()
    try:
        print(f"coda-lsp: loading {options.model_path or 'the default model'} ...", file=sys.stderr)
        lm = load_engine(options)
    except ModelUnavailable as exc:
        print(f"coda-lsp {command}: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:   # ModelLoadError and friends carry their own fix
        print(f"coda-lsp {command}: model not loaded: {exc}", file=sys.stderr)
        return 2
    ctx = build_context(doc, a, b, cfg=svc.context_config())
    print(f"coda-lsp: {lm.path.name} on {lm.device} ({lm.dtype}) loaded in {lm.load_s:.1f}s; "
          f"{ctx.kind} hole, {ctx.length} tokens", file=sys.stderr)
    job = InfillJob(lm, ctx, options, 1, options.context_tokens)
    t1 = time.perf_counter()
    while not job.done:
        partial, step, steps, masked, done = job.step()
        if args.show_steps:
            shown = partial.replace("\n", "\\n")
            print(f"step {step:>3}/{steps} masked {masked:>3} | {shown}", file=sys.stderr)
    items = clean_candidates(job.candidates(), ctx, options.gate)
    print(f"coda-lsp: {job.num_steps} steps in {time.perf_counter() - t1:.2f}s "
          f"(total {time.perf_counter() - t0:.2f}s)", file=sys.stderr)
    if not items:
        print("coda-lsp: the model produced nothing usable here", file=sys.stderr)
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
    args = server_parser().parse_args(argv)
    setup_logging(args.log_file, args.log_level)
    from coda_lsp.server import build_server
    server = build_server(options_from(args))
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
    "stats": "coda_lsp.stats:main",
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
