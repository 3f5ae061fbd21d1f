"""Server settings: one dataclass, parsed leniently from `initializationOptions` / didChangeConfiguration.

The editor clients send exactly these camelCase keys: modelPath, device, dtype, steps, maxTokens,
algorithm, temperature, threshold, cache, blockLength, debounceMs, contextTokens, enabledLanguages, streaming, speculate,
threads, minConfidence, minShownConfidence, stats. A bad value never stops the server: it keeps the previous value and the problem is reported as
one warning line (shown to the user by the server).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any, Optional

from coda_lsp.gate import GateConfig
from coda_lsp.stats import STATS_MODES

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")
CACHES = ("none", "prefix", "dual")
DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float32", "bfloat16", "float16", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ServerOptions:
    model_path: Optional[str] = None     # CoDA directory; None = the embedded default model
    device: str = "auto"                 # auto | cpu | cuda | mps
    dtype: str = "auto"                  # auto | float32 | bfloat16 (never float16 on CPU: the loader decides)
    steps: int = 16                      # max denoise steps per hole
    max_tokens: int = 48                 # length budget (mask tokens) for block holes; line holes use min(24, this)
    algorithm: str = "entropy"           # which positions to unmask first
    temperature: float = 0.0             # 0 = greedy
    threshold: Optional[float] = 0.9     # confidence-threshold parallel decoding (None = fixed schedule only)
    cache: str = "dual"                  # none (exact) | prefix | dual: context K/V reused within a block
    block_length: int = 8                # with a cache: decode the hole in blocks of this many tokens, left to right
    debounce_ms: int = 75                # wait after an automatic trigger before running the model
    context_tokens: int = 1024           # budget for prefix + suffix + extra context
    enabled_languages: Optional[tuple[str, ...]] = None   # None = every language
    streaming: bool = False              # send coda/partialCompletion notifications
    speculate: bool = True               # after a completion, compute the one that follows accepting it
    threads: Optional[int] = None        # CPU threads for the model; None = OMP_NUM_THREADS, else half the cores
    min_confidence: float = 0.0          # confidence gate: cut a suggestion before its first token below this
    min_shown_confidence: float = 0.0    # confidence gate: show nothing when the first line's mean is below this
    stats: str = "on"                    # local acceptance statistics: on | off | code (also keep the text)

    @property
    def gate(self) -> GateConfig:
        return GateConfig(self.min_confidence, self.min_shown_confidence)

    def language_enabled(self, language: str) -> bool:
        return self.enabled_languages is None or language in self.enabled_languages or "*" in self.enabled_languages


# camelCase key -> (field, converter returning the value or raising ValueError)
def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or int(v) != float(v) or int(v) < 1:
        raise ValueError("expected a positive integer")
    return int(v)


def _non_negative_int(v: Any) -> int:
    if isinstance(v, bool) or int(v) < 0:
        raise ValueError("expected an integer >= 0")
    return int(v)


def _choice(options: tuple[str, ...]):
    def conv(v: Any) -> str:
        if not isinstance(v, str) or v.lower() not in options:
            raise ValueError(f"expected one of {', '.join(options)}")
        return v.lower()
    return conv


def _temperature(v: Any) -> float:
    if isinstance(v, bool) or float(v) < 0:
        raise ValueError("expected a number >= 0")
    return float(v)


def _threshold(v: Any) -> Optional[float]:
    if v is None:
        return None
    if isinstance(v, bool) or not 0 < float(v) <= 1:
        raise ValueError("expected a number in (0, 1] or null")
    return float(v)


def _unit(v: Any) -> float:
    if isinstance(v, bool) or not 0 <= float(v) <= 1:
        raise ValueError("expected a number in [0, 1]")
    return float(v)


def _threads(v: Any) -> Optional[int]:
    return None if v is None else _positive_int(v)


def _languages(v: Any) -> Optional[tuple[str, ...]]:
    if v is None:
        return None
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise ValueError("expected a list of language ids")
    return tuple(x.lower() for x in v)


def _path(v: Any) -> Optional[str]:
    if v is None or v == "":
        return None
    if not isinstance(v, str):
        raise ValueError("expected a path string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("expected true or false")
    return v


KEYS = {
    "modelPath": ("model_path", _path), "device": ("device", _choice(DEVICES)), "dtype": ("dtype", _choice(DTYPES)),
    "steps": ("steps", _positive_int), "maxTokens": ("max_tokens", _positive_int),
    "algorithm": ("algorithm", _choice(ALGORITHMS)), "temperature": ("temperature", _temperature),
    "threshold": ("threshold", _threshold), "debounceMs": ("debounce_ms", _non_negative_int),
    "contextTokens": ("context_tokens", _positive_int), "enabledLanguages": ("enabled_languages", _languages),
    "streaming": ("streaming", _bool), "cache": ("cache", _choice(CACHES)), "speculate": ("speculate", _bool),
    "blockLength": ("block_length", _positive_int),
    "threads": ("threads", _threads),
    "minConfidence": ("min_confidence", _unit), "minShownConfidence": ("min_shown_confidence", _unit),
    "stats": ("stats", _choice(STATS_MODES)),
}
assert {f for f, _ in KEYS.values()} == {f.name for f in fields(ServerOptions)}


def merge_options(base: ServerOptions, raw: Any) -> tuple[ServerOptions, list[str]]:
    """New options with the valid keys of `raw` applied, and one warning per ignored key/value."""
    if raw is None:
        return base, []
    if isinstance(raw, dict) and isinstance(raw.get("coda"), dict):   # {"coda": {...}} settings sections
        raw = raw["coda"]
    if not isinstance(raw, dict):
        return base, [f"coda settings must be an object, got {type(raw).__name__}: ignored"]
    changes: dict[str, Any] = {}
    warnings: list[str] = []
    for key, value in raw.items():
        if key not in KEYS:
            warnings.append(f"unknown coda setting {key!r} ignored (known: {', '.join(KEYS)})")
            continue
        name, conv = KEYS[key]
        try:
            changes[name] = conv(value)
        except (TypeError, ValueError) as exc:
            warnings.append(f"coda setting {key}={value!r} ignored: {exc}")
    return replace(base, **changes), warnings
