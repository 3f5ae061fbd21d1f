"""coda_lsp: the language server that serves CoDA diffusion completions to editors."""

__version__ = "0.1.0"
