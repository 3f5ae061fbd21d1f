"""The command-line flags shared by `coda-lsp` and its subcommands: one per row of `SETTINGS`.

Why a module of its own: `calibrate` (a stage of loading) and `http.serve` need the same flags as the
server's command line, and must not import `cli` (which imports the server): imports run one way,
`cli → server → service → calibrate/loading`, and all of them may import this.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

from coda_lsp.options import SETTINGS, ServerOptions, merge_options, wire_defaults


def add_setting_flags(p: argparse.ArgumentParser) -> None:
    """One flag per row of `coda_lsp.options.SETTINGS` (values are parsed like initializationOptions)."""
    defaults = wire_defaults()
    for s in SETTINGS:
        if s.cli_flag:
            model = s.wire == "modelPath"
            p.add_argument(s.cli_flag, dest=s.wire, default=None,
                           metavar="PATH|REPO_ID" if model else s.cli_flag[2:].upper().replace("-", "_"),
                           help=s.help if model else f"{s.help} (default {defaults[s.wire]})")
    p.add_argument("--api-key", metavar="KEY", help="key of the remote --engine (default: $CODA_API_KEY)")


def options_from(args: argparse.Namespace, parser: argparse.ArgumentParser) -> ServerOptions:
    """The flags that were given, applied over the server's defaults by the same rules as the LSP settings."""
    given = {s.wire: getattr(args, s.wire) for s in SETTINGS if s.cli_flag and getattr(args, s.wire) is not None}
    options, problems = merge_options(ServerOptions(), given)
    if problems:
        parser.error(problems[0].replace("coda setting ", "").replace(" ignored", ""))
    return replace(options, api_key=args.api_key or os.environ.get("CODA_API_KEY") or None)
