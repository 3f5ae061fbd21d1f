"""How next-edit proposals are scored and decoded: `EditConfig` (no torch, so the server reads its defaults).

The stage itself is `coda_model.next_edit.propose_edits`. The defaults were chosen on
`coda-bench next-edit` (benchmarks/next_edit.py) with the default model; see the README row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from coda_model.decode_config import ALGORITHMS


@dataclass(frozen=True)
class EditConfig:
    """Scoring passes, the bar for 'this token no longer fits', span shaping and the span decode."""

    num_passes: int = 4              # strided scoring passes: each masks ~1/num_passes of the window (a forward each)
    max_token_prob: float = 0.05     # a window token is suspect when p(it | everything else) is below this
    max_ratio: float = 0.1           # ... and below this fraction of the model's most likely token there
    min_confidence: float = 0.5      # a proposal is kept only when its least sure new token is at least this
    slack: int = 1                   # extra masks per span, so the new text may be longer than the old (pads end it)
    max_spans: int = 4               # re-mask at most this many spans (the least likely first)
    max_span_tokens: int = 8         # a longer run of suspect tokens is not a local edit: skipped
    merge_gap: int = 0               # suspect tokens at most this many tokens apart join one span
    steps: int = 6                   # denoise forwards for all spans together (threshold reveals the sure ones)
    threshold: float = 0.9           # reveal every masked token at least this sure per step (>= 1 per step)
    alg: str = "entropy"             # unmasking order for the span decode (coda_model.sampler)
    cache: str = "dual"              # "dual": score and decode the window against the context's K/V; "none": exact
    max_window_tokens: int = 1024    # bound on the scored window (the caller cuts ~40 lines)
    group_words: bool = True         # every occurrence of a word is masked in the same pass (see next_edit.py)

    def __post_init__(self) -> None:
        for name in ("num_passes", "max_spans", "max_span_tokens", "steps", "max_window_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("slack", "merge_gap"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("max_token_prob", "max_ratio", "min_confidence", "threshold"):
            if not 0.0 <= float(getattr(self, name)) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.alg not in ALGORITHMS:
            raise ValueError(f"unknown alg {self.alg!r}: use one of {', '.join(ALGORITHMS)}")
        if self.cache not in ("none", "dual"):
            raise ValueError(f"unknown cache {self.cache!r} for next edits: use none or dual")

    def bar(self, min_confidence: Optional[float]) -> "EditConfig":
        """The same config with another confidence bar (the server's nextEditMinConfidence)."""
        from dataclasses import replace
        return self if min_confidence is None else replace(self, min_confidence=float(min_confidence))
