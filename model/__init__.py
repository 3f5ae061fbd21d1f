"""coda_model: the CoDA masked-diffusion code model, its checkpoints, tokenizer and infilling engine.

Knows nothing about LSP or editors (see DESIGN.md: coda_lsp -> coda_model <- coda_train).
"""

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError

__all__ = ["CodaConfig", "ModelLoadError"]
