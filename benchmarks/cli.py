"""`coda-bench` command line: one subcommand per question, each a module with `main(argv) -> int`.

    coda-bench engine --quick          # diffusion engine: step time per cache, threshold sweep, AR latency
    coda-bench train                   # training throughput / MFU
    coda-bench load                    # peak RSS of loading the 1.7B shape
    coda-bench server                  # language-server latency
    coda-bench http                    # HTTP server: batched vs serial requests/s and latency
    coda-bench soak                    # memory and latency over a long run of editing traffic
    coda-bench latency                 # what an editor waits for vs the engine's decode of the same hole
    coda-bench kernels                 # one window-step matmul in each CPU kernel considered
    coda-bench realsize                # the kernel table at the 1.7B shape through the real server
    coda-bench gate                    # the confidence gate's defaults on held-out lines
    coda-bench next-edit               # next-edit suggestions: precision/recall/controls/latency vs a fill baseline

Add a subcommand by adding a row to `SUBCOMMANDS` (module imported only when chosen).
"""

from __future__ import annotations

import importlib
import sys

SUBCOMMANDS = {  # name -> (module with main(argv), one-line help)
    "engine": ("coda_bench.engine", "diffusion engine: per-step cost of caches, threshold decoding, vs AR"),
    "train": ("coda_bench.train", "training throughput and MFU"),
    "load": ("coda_bench.load_rss", "peak RSS of loading a 1.7B-shape checkpoint"),
    "server": ("coda_bench.server", "language-server latency"),
    "kernels": ("coda_bench.kernel_ops", "one window-step matmul in every CPU kernel considered (fp32, bf16, int8 variants)"),
    "realsize": ("coda_bench.realsize", "the server's decode at the real 1.7B shape: cold, warm, AR, floor, agreement"),
    "http": ("coda_bench.http", "coda-lsp serve: requests/s and latency, batched vs one after another"),
    "soak": ("coda_bench.soak", "long run of mixed editing traffic: server RSS and latency stay flat"),
    "latency": ("coda_bench.editor_latency", "a real LSP client's wait, fresh and after a keystroke, vs the engine alone"),
    "gate": ("coda_bench.gate", "the confidence gate's defaults: coverage, precision, net chars on held-out lines"),
    "next-edit": ("coda_bench.next_edit", "next-edit suggestions on held-out code: precision, recall, controls, latency"),
}


def usage() -> str:
    rows = "\n".join(f"  {name:<8} {help_}" for name, (_, help_) in SUBCOMMANDS.items())
    return f"usage: coda-bench <subcommand> [options]\n\nsubcommands:\n{rows}\n"


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), end="")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in SUBCOMMANDS:
        print(f"coda-bench: unknown subcommand {name!r}\n{usage()}", end="", file=sys.stderr)
        return 2
    module = importlib.import_module(SUBCOMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
