"""How to denoise a hole: `DecodeConfig`, its constants, its validation and its named presets.

This module is the one owner of decode settings. It imports no torch, so the language server, the
HTTP server, `coda-eval` and the training recipes can all read the defaults without loading a model:

    DecodeConfig.editor()   # what the language server runs (interactive, threshold + dual cache)
    DecodeConfig.paper()    # the paper's evaluation settings (coda-spec §6.1)
    DecodeConfig()          # the engine's plain default (exact, fixed schedule, greedy)

Every layer that exposes a setting (CLI flags, LSP settings, eval flags) converts its raw value with
`parse_field` and validates it by building a `DecodeConfig` (`with_field`), so a value is checked in
one place and with one message, whatever spelling carried it.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace
from typing import Any, Optional

ALGORITHMS = ("origin", "maskgit_plus", "topk_margin", "entropy")   # unmasking order (spec §5.2)
CACHE_KINDS = ("none", "prefix", "dual")                           # none = exact; the others approximate


@dataclass(frozen=True)
class DecodeConfig:
    """How to denoise a hole. Validated on construction."""

    steps: int = 32                  # max denoise steps (forwards) for the hole; clamped to the hole length
    alg: str = "entropy"             # origin | maskgit_plus | topk_margin | entropy (spec §5.2)
    temperature: float = 0.0         # 0 = greedy proposals
    top_p: Optional[float] = None    # nucleus filter on the proposals
    top_k: Optional[int] = None      # top-k filter on the proposals
    alg_temp: Optional[float] = None  # sample positions from softmax(confidence / alg_temp) instead of top-k
    eps: float = 1e-3                # end of the linear 1 -> eps timestep schedule
    threshold: Optional[float] = None  # reveal every position with p(token) >= threshold, >= 1 per step
    block_length: Optional[int] = None  # semi-autoregressive blocks of this many hole tokens (None = one block)
    cache: str = "none"              # "none" (exact) | "prefix" | "dual" (approximate, refreshed per block)
    seed: Optional[int] = 0          # RNG seed for sampling; None = fresh randomness
    cache_refresh: Optional[int] = None  # with a cache: also refresh every this many steps inside a block

    def __post_init__(self) -> None:
        if self.alg not in ALGORITHMS:
            raise ValueError(f"unknown alg {self.alg!r}: use one of {', '.join(ALGORITHMS)}")
        if self.cache not in CACHE_KINDS:
            raise ValueError(f"unknown cache {self.cache!r}: use one of {', '.join(CACHE_KINDS)}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {self.top_k}")
        if self.alg_temp is not None and self.alg_temp < 0:
            raise ValueError(f"alg_temp must be >= 0, got {self.alg_temp}")
        if not 0 < self.eps < 1:
            raise ValueError(f"eps must be in (0, 1), got {self.eps}")
        if self.threshold is not None and not 0 < self.threshold <= 1:
            raise ValueError(f"threshold must be in (0, 1] (or None for the fixed schedule), got {self.threshold}")
        if self.block_length is not None and self.block_length < 1:
            raise ValueError(f"block_length must be >= 1 (or None for one block), got {self.block_length}")
        if self.cache_refresh is not None and self.cache_refresh < 1:
            raise ValueError(f"cache_refresh must be >= 1 (or None), got {self.cache_refresh}")

    # ------------------------------------------------------------------------------------ presets
    @classmethod
    def editor(cls) -> "DecodeConfig":
        """The language server's decode: at most 16 forwards, τ 0.9 threshold, dual cache, blocks of 8.

        Blocks of 8 (not one block): on held-out lines the default model reaches edit similarity
        0.219 with blocks of 8 vs 0.140 with one block (it fills a single block's end with pads first).
        """
        return cls(steps=16, alg="entropy", temperature=0.0, threshold=0.9, cache="dual", block_length=8, seed=0)

    @classmethod
    def paper(cls) -> "DecodeConfig":
        """The paper's evaluation decode (coda-spec §6.1): entropy, T 0.1, top-p 0.9, 768 steps, exact."""
        return cls(steps=768, alg="entropy", temperature=0.1, top_p=0.9, cache="none", seed=0)

    # ------------------------------------------------------------------------------------ derived
    def key(self) -> tuple:
        """Every field, in order: equal keys decode identically (used by result caches)."""
        return tuple(getattr(self, f.name) for f in fields(self))

    def with_field(self, name: str, raw: Any) -> "DecodeConfig":
        """A copy with `name` set from a raw (JSON or command-line) value; ValueError says what is wrong."""
        return replace(self, **{name: parse_field(name, raw)})


FIELD_NAMES = tuple(f.name for f in fields(DecodeConfig))
_HINTS = typing.get_type_hints(DecodeConfig)
_CHOICES = {"alg": ALGORITHMS, "cache": CACHE_KINDS}


def parse_field(name: str, raw: Any) -> Any:
    """Convert a raw setting value to the type of `DecodeConfig.<name>` (ranges are checked by the class).

    Accepts what editors send (JSON numbers, strings, null) and what command lines give (strings;
    'none' means None where a field is optional).
    """
    if name not in _HINTS:
        raise ValueError(f"unknown decode setting {name!r} (known: {', '.join(FIELD_NAMES)})")
    hint = _HINTS[name]
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    if raw is None or (optional and isinstance(raw, str) and raw.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ValueError(f"{name} needs a value")
    if isinstance(raw, bool):
        raise ValueError(f"expected a {base.__name__}, got {raw!r}")
    if base is str:
        value = str(raw).lower()
        if name in _CHOICES and value not in _CHOICES[name]:
            raise ValueError(f"expected one of {', '.join(_CHOICES[name])}")
        return value
    try:
        number = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {raw!r}") from None
    if base is int:
        if number != int(number):
            raise ValueError(f"expected an integer, got {raw!r}")
        return int(number)
    return number
