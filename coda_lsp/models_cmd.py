"""`coda-lsp models [FOLDER...]`: list the diffusion code models found in the Hugging Face cache and folders.

    coda-lsp models                      # what the HF cache holds (HF_HUB_CACHE / HF_HOME respected)
    coda-lsp models ~/models runs/       # plus model directories in these folders
Each row's MODEL (a repo id or a PATH) is what `--model` / `modelPath` takes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence


def run_models(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="coda-lsp models", description=__doc__.split("\n")[0])
    p.add_argument("folders", nargs="*", type=Path, help="folders to search besides the Hugging Face cache")
    p.add_argument("--no-cache", action="store_true", help="do not list the Hugging Face cache")
    args = p.parse_args(argv)
    from coda_model.catalog import format_table, scan_folders, scan_hf_cache
    from coda_model.hub import hub_cache_dir

    entries = ([] if args.no_cache else scan_hf_cache()) + scan_folders(args.folders)
    where = ", ".join([*([] if args.no_cache else [f"the HF cache ({hub_cache_dir()})"]), *map(str, args.folders)])
    if not entries:
        print(f"coda-lsp models: no supported diffusion code model in {where or 'nothing'}; get one with "
              "`hf download Salesforce/CoDA-v0-Instruct` (or Dream-org/Dream-Coder-v0-Instruct-7B, "
              "GSAI-ML/LLaDA-8B-Instruct)", file=sys.stderr)
        return 1
    print(format_table(entries))
    return 0


def main(name: str, argv: Sequence[str]) -> int:
    """`coda-lsp models ...` (the SUBCOMMANDS entry point)."""
    return run_models(argv)
