"""`coda-lsp serve`: the engine over HTTP for llama.vim, llama.vscode, Continue, ... and remote language servers.

Usage:
    coda-lsp serve [--model PATH] [--host 127.0.0.1] [--port 8012] [--api-key KEY]   # key also from CODA_API_KEY
Example (CPU, the embedded default model):
    coda-lsp serve &
    curl -s 127.0.0.1:8012/infill -d '{"input_prefix": "def add(a, b):\\n    return ", "input_suffix": "\\n"}'

Binding an address other than loopback without an API key is refused at start. docs/http.md lists the
endpoints and the llama.cpp / OpenAI fields honoured and ignored.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from dataclasses import replace
from typing import Optional, Sequence

from coda_lsp.options import QUANTIZE
from coda_lsp.http.config import ServeConfig
from coda_lsp.options import BY_WIRE

log = logging.getLogger("coda_lsp")


def parser() -> argparse.ArgumentParser:
    d = ServeConfig()
    p = argparse.ArgumentParser(prog="coda-lsp serve", description="Serve the CoDA engine over HTTP "
                                "(llama.cpp /infill, OpenAI /v1/completions, /v1/models, /health).")
    p.add_argument("--model", metavar="PATH|REPO_ID", help="CoDA model directory or cached Hugging Face repo id "
                   "(default: the embedded default model)")
    p.add_argument("--device", default=d.device, choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--dtype", default=d.dtype, choices=("auto", "float32", "bfloat16"))
    p.add_argument("--quantize", default=d.quantize, choices=QUANTIZE,
                   help="int8 weights and activations on a CPU (default auto: when measured fastest at load)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for the model (default: measured at load)")
    p.add_argument("--host", default=d.host, help=f"address to bind (default {d.host}; others need an API key)")
    p.add_argument("--port", type=int, default=d.port, help=f"default {d.port}")
    p.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' (default: $CODA_API_KEY)")
    p.add_argument("--max-hole", type=int, default=d.max_hole,
                   help=f"hole tokens a request gets at most: min(n_predict, this) (default {d.max_hole})")
    p.add_argument("--max-queue", type=int, default=d.max_queue, help=f"waiting requests before 503 (default {d.max_queue})")
    p.add_argument("--max-batch", type=int, default=None,
                   help="rows denoised together (default: 8 on a GPU, 1 on CPU, where a batch step costs about "
                        "rows x one row)")
    p.add_argument("--timeout", type=float, default=d.request_timeout_s,
                   help=f"seconds a request may take, queue included (default {d.request_timeout_s:g})")
    for wire, dest in (("minConfidence", "min_confidence"), ("minShownConfidence", "min_shown_confidence")):
        s = BY_WIRE[wire]   # the language server's setting: same flag, help, check and default
        p.add_argument(s.cli_flag, dest=dest, type=_checked(s), default=getattr(d, dest),
                       help=f"{s.help} (default {getattr(d, dest)}; a request may set {dest})")
    p.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    return p


def _checked(setting):
    """argparse type from a SETTINGS row's converter (its ValueError becomes argparse's one-line error)."""
    def conv(raw: str):
        try:
            return setting.parse(float(raw))
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    conv.__name__ = setting.wire
    return conv


def config_from(args: argparse.Namespace, env: dict) -> ServeConfig:
    return replace(ServeConfig(), host=args.host, port=args.port, api_key=args.api_key or env.get("CODA_API_KEY") or None,
                   model_path=args.model, device=args.device, dtype=args.dtype, quantize=args.quantize,
                   threads=args.threads,
                   max_hole=max(1, args.max_hole), max_queue=max(1, args.max_queue),
                   max_batch=max(1, args.max_batch) if args.max_batch else None,
                   request_timeout_s=max(1.0, args.timeout), min_confidence=args.min_confidence,
                   min_shown_confidence=args.min_shown_confidence)


def check_start(cfg: ServeConfig) -> Optional[str]:
    """The one-line reason the server must not start, or None."""
    if not cfg.loopback and not cfg.api_key:
        return (f"refusing to bind {cfg.host} without an API key: pass --api-key KEY (or set CODA_API_KEY), "
                "or bind 127.0.0.1")
    if not 0 < cfg.port < 65536:
        return f"--port must be in 1..65535, got {cfg.port}"
    from coda_lsp.loading import ModelUnavailable, resolve_model_path
    try:
        resolve_model_path(cfg.model_path)
    except ModelUnavailable as exc:
        return str(exc)
    return None


def main(name: str, argv: Sequence[str]) -> int:
    args = parser().parse_args(argv)
    cfg = config_from(args, dict(os.environ))
    problem = check_start(cfg)
    if problem is not None:
        print(f"coda-lsp serve: {problem}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import uvicorn
    from coda_lsp.http.app import build_app
    from coda_lsp.http.worker import BatchWorker
    log.info("coda-lsp serve on http://%s:%d (API key %s)", cfg.host, cfg.port, "required" if cfg.api_key else "off")
    uvicorn.run(build_app(cfg, BatchWorker(cfg)), host=cfg.host, port=cfg.port, log_level=args.log_level.lower(),
                access_log=args.log_level == "DEBUG", timeout_graceful_shutdown=5)
    return 0
