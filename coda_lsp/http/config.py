"""`coda-lsp serve` settings: one dataclass, filled once from the command line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from coda_model.decode_config import DecodeConfig

from coda_lsp.gate import GateConfig
from coda_lsp.options import ServerOptions


@dataclass(frozen=True)
class ServeConfig:
    host: str = "127.0.0.1"            # loopback unless told otherwise; other hosts need an API key
    port: int = 8012                   # llama.vim's default endpoint port
    api_key: Optional[str] = None      # Bearer key every endpoint but /health requires (None = open)
    model_path: Optional[str] = None   # CoDA directory; None = the embedded default model
    device: str = "auto"
    dtype: str = ServerOptions.dtype
    quantize: str = ServerOptions.quantize
    threads: Optional[int] = None      # CPU threads for the model (None = measured at load)
    decode: DecodeConfig = field(default_factory=DecodeConfig.editor)  # what a request gets unless it says
    max_hole: int = 64                 # a request's hole is min(n_predict, max_hole) tokens (diffusion: fixed size)
    max_predict: int = 8192            # n_predict / max_tokens above this are refused (400)
    max_steps: int = 256               # decode.steps above this are refused (400)
    context_tokens: int = ServerOptions.context_tokens   # default token budget for extra + prefix + suffix
    # the confidence gate, as the language server's (same defaults, one definition: ServerOptions)
    min_confidence: float = ServerOptions.min_confidence
    min_shown_confidence: float = ServerOptions.min_shown_confidence
    max_context_tokens: int = 8192     # a request's context_tokens above this are refused
    max_body_bytes: int = 1 << 20      # request bodies above this get 413
    max_queue: int = 64                # requests waiting for the model; one more gets 503
    max_batch: Optional[int] = None    # rows (requests x candidates) denoised together; None = 8 on an
                                       # accelerator, 1 on CPU (a CPU step costs ~rows x one row, and rows ride
                                       # along until the slowest is done: 0.64-0.77x, benchmarks/results/http.json)
    batch_window_ms: float = 2.0       # an idle worker waits this long for requests arriving together
    request_timeout_s: float = 60.0    # a request not answered in this time gets 503 (queue wait included)
    max_candidates: int = 8            # n / n_cmpl above this are refused

    @property
    def gate(self) -> GateConfig:
        return GateConfig(self.min_confidence, self.min_shown_confidence)

    def batch_rows(self, device: str) -> int:
        return self.max_batch if self.max_batch is not None else (1 if device == "cpu" else 8)

    @property
    def loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
