"""coda_model: the CoDA masked-diffusion code model, its checkpoints, tokenizer and infilling engine.

Knows nothing about LSP or editors (see DESIGN.md: coda_lsp -> coda_model <- coda_train).

    from coda_model import Engine, DecodeConfig, load_model
    lm = load_model("path/to/CoDA-v0-Instruct")           # or coda_model.default_model_path()
    engine = Engine(lm)                                    # engine.infill(prefix_ids, suffix_ids, length=32)

The torch-backed names are imported on first use, so `import coda_model` (and an LSP `initialize`)
stays fast and torch-free.
"""

from __future__ import annotations

from importlib import import_module, resources
from pathlib import Path

from coda_model.config import CodaConfig
from coda_model.decode_config import ALGORITHMS, CACHE_KINDS, DecodeConfig
from coda_model.errors import ModelLoadError

_LAZY = {
    "CodaLM": "coda_model.network",
    "LoadedModel": "coda_model.checkpoint", "load_model": "coda_model.checkpoint", "save_model": "coda_model.checkpoint",
    "CodaTokenizer": "coda_model.tokenizer",
    "Engine": "coda_model.engine", "DenoiseState": "coda_model.engine",
}

__all__ = ["CodaConfig", "DecodeConfig", "ALGORITHMS", "CACHE_KINDS", "ModelLoadError", "default_model_path", *_LAZY]


def default_model_path() -> Path:
    """The small model shipped inside the package (what `coda-lsp` uses without `--model`)."""
    return Path(str(resources.files("coda_model") / "default_model"))


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'coda_model' has no attribute {name!r}")
