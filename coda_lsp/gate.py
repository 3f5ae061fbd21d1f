"""The confidence gate: show only what the model is sure of (a pure post-processing stage).

A diffusion model knows the probability of every token it revealed. The gate uses it twice:

- `cut`: a suggestion ends before its first token below `min_confidence` (the user accepts the sure
  part and types on; a wrong tail costs a delete);
- `first_line_score` < `min_shown_confidence`: nothing is shown (a wrong ghost text costs attention).

The score of the first line is the *mean* confidence of its tokens. Why mean, not min: on the default
model's held-out lines the mean separates right from wrong first lines better (see docs/suggestions.md;
`coda-bench gate` (benchmarks/gate.py) measures both); the min is already what `cut` acts on.

Pieces come from `coda_model.engine.Engine.hole_spans`: one per token (a token cut inside a UTF-8
character is merged with the next), so a cut never falls inside a token or a character.
Nothing here knows about LSP, torch or the model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

from coda_lsp.postprocess import PostContext, postprocess

SCORES = ("mean", "min")
FIRST_LINE_SCORE = "mean"


@dataclass(frozen=True)
class Span:
    text: str
    confidence: float   # p(token) when it was revealed


@dataclass(frozen=True)
class Candidate:
    """One candidate's raw hole text as token pieces, each with its confidence."""
    spans: tuple[Span, ...]

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.spans)

    @classmethod
    def of(cls, pieces) -> "Candidate":
        """From (text, confidence) pairs (what `Engine.hole_spans` returns)."""
        return cls(tuple(Span(t, float(c)) for t, c in pieces))

    @classmethod
    def sure(cls, text: str) -> "Candidate":
        """Text with no confidence information (results cached before the gate): never cut or hidden."""
        return cls((Span(text, 1.0),) if text else ())


@dataclass(frozen=True)
class GateConfig:
    min_confidence: float = 0.0          # cut before the first token below this (0 = never cut)
    min_shown_confidence: float = 0.0    # show nothing when the first line scores below this (0 = always show)
    score: str = FIRST_LINE_SCORE        # how the first line is scored (the calibration compares both)

    @property
    def off(self) -> bool:
        return self.min_confidence <= 0.0 and self.min_shown_confidence <= 0.0


def first_line_spans(c: Candidate) -> list[Span]:
    """The pieces of the first line that has code (leading blank lines and pure whitespace skipped)."""
    out: list[Span] = []
    for s in c.spans:
        head, nl, _ = s.text.partition("\n")
        if head.strip():
            out.append(s)
        if nl and out:
            break
    return out


def first_line_score(c: Candidate, how: str = FIRST_LINE_SCORE) -> float:
    """Mean (or min) confidence of the first line's tokens; 0.0 when the candidate has no code."""
    confs = [s.confidence for s in first_line_spans(c)]
    if not confs:
        return 0.0
    return min(confs) if how == "min" else sum(confs) / len(confs)


def cut(c: Candidate, min_confidence: float) -> tuple[str, bool]:
    """(text up to the first piece below `min_confidence`, whether anything was cut)."""
    kept = []
    for s in c.spans:
        if s.confidence < min_confidence:
            return "".join(kept), True
        kept.append(s.text)
    return "".join(kept), False


def apply_gate(c: Candidate, cfg: GateConfig) -> Optional[tuple[str, bool]]:
    """None when the gate hides the candidate, else (its text, cut?) ready for the post-processing chain."""
    if cfg.off:
        return c.text, False
    if cfg.min_shown_confidence > 0.0 and first_line_score(c, cfg.score) < cfg.min_shown_confidence:
        return None
    return cut(c, cfg.min_confidence)


def hidden_note(cands: list[Candidate], cfg: GateConfig) -> Optional[str]:
    """A log / status line when the gate hid every candidate that had code (None otherwise)."""
    coded = [c for c in cands if c.text.strip()]
    if not coded or cfg.off:
        return None
    scores = [first_line_score(c, cfg.score) for c in coded]
    if any(s >= cfg.min_shown_confidence and cut(c, cfg.min_confidence)[0].strip() for c, s in zip(coded, scores)):
        return None
    first = max(next((s.confidence for s in c.spans if s.text.strip()), 0.0) for c in coded)
    return (f"confidence gate: nothing shown (best first-line {cfg.score} confidence {max(scores):.2f}, "
            f"minShownConfidence {cfg.min_shown_confidence:g}; best first token {first:.2f}, "
            f"minConfidence {cfg.min_confidence:g})")


def gated_text(c: Candidate, pctx: PostContext, cfg: GateConfig) -> Optional[str]:
    """The gate, then the post-processing chain on what it kept; None = show nothing for this candidate."""
    gated = apply_gate(c, cfg)
    if gated is None:
        return None
    text, was_cut = gated
    return postprocess(text, replace(pctx, truncated=was_cut) if was_cut else pctx)
