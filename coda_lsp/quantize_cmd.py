"""`coda-lsp quantize SRC DST`: write an int8 copy of a model that loads without quantizing again.

    coda-lsp quantize ~/models/CoDA-v0-Instruct ~/models/CoDA-v0-Instruct-int8
    coda-lsp --model ~/models/CoDA-v0-Instruct-int8          # loads int8 rows as they are

Optional: `--quantize int8` (or `auto`, where int8 measures fastest) quantizes any model while it
loads, tensor by tensor; a quantized copy only saves that load-time work and half the disk reads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence


def main(name: str, argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog=f"coda-lsp {name}", description=__doc__.split("\n")[0])
    p.add_argument("src", help="model directory (or cached Hugging Face repo id) to quantize")
    p.add_argument("dst", type=Path, help="directory to write the int8 copy to")
    args = p.parse_args(argv)
    from coda_model.errors import ModelLoadError
    from coda_model.hub import resolve_model_ref
    from coda_model.quantized import write_quantized
    t0 = time.perf_counter()
    try:
        stats = write_quantized(resolve_model_ref(args.src), args.dst)
    except ModelLoadError as exc:
        print(f"coda-lsp {name}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"coda-lsp {name}: cannot write {args.dst}: {exc}", file=sys.stderr)
        return 2
    print(f"coda-lsp {name}: wrote {args.dst} ({stats['tensors']} tensors, {stats['int8_bytes'] / 1e6:.1f} MB int8 + "
          f"{stats['float_bytes'] / 1e6:.1f} MB float, {stats['shards']} file(s)) in {time.perf_counter() - t0:.1f}s")
    return 0
