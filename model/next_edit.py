"""Next-edit proposals by re-masking: which tokens of a window no longer fit, and what should replace them.

    from coda_model.next_edit import propose_edits
    found = propose_edits(engine, ids, window=(w0, w1), protect=(p0, p1))   # token indices into ids
    for e in found.proposals:                     # ids[e.start:e.end] -> e.new_ids, e.confidence
        ...

Why a masked-diffusion model can do this: it predicts every masked position from everything around
it, so masking a token and reading p(token) says how well it fits the whole file, after as well as
before it. The logits of an unmasked position mean nothing, so each token is scored while masked,
in `num_passes` strided passes (a forward each, the window only, against the context's K/V: the
dual cache). Every occurrence of a word is masked in the same pass (`group_words`): after a rename
at the definition, the other uses of the old name must not vouch for each other.

The suspect tokens (p below `max_token_prob`), outside the span the user just edited (`protect`),
are merged into spans, each re-masked with `slack` extra positions for a length change (pads the
model writes there end the text), and all spans are denoised together in at most `steps` forwards,
so the uses of a renamed name agree. A span whose new text differs from the old is proposed with
its confidence (the least sure new token). Cost: 1 + num_passes + steps forwards, all but two of
them over the window only. Token ids in, token ids out: text is the caller's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch

from coda_model.cache import make_cache
from coda_model.edit_config import EditConfig
from coda_model.sampler import denoise_step

Span = tuple[int, int]
_WORD = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")


@dataclass
class EditProposal:
    """Replace ids[start:end] by new_ids (indices into the caller's ids)."""
    start: int
    end: int
    new_ids: list[int]
    confidence: float        # least sure token the decode revealed in this span (pads included)
    score: float             # p of the least likely old token: how badly the old text fit


@dataclass
class NextEdits:
    """The proposals and what led to them (the benchmark's breakdown reads `suspects` and `decoded`)."""
    proposals: list[EditProposal] = field(default_factory=list)
    suspects: list[tuple[int, int, float]] = field(default_factory=list)   # spans re-masked, with their score
    decoded: list[EditProposal] = field(default_factory=list)   # every decoded span, before the bar / no-change
    token_probs: list[float] = field(default_factory=list)      # p(token) per window position
    token_best: list[float] = field(default_factory=list)       # p of the model's most likely token there
    window: Span = (0, 0)
    num_forwards: int = 0


def propose_edits(engine, ids: Sequence[int], window: Span, *, protect: Optional[Span] = None,
                  config: Optional[EditConfig] = None) -> NextEdits:
    """Score the window's tokens, re-mask the spans that no longer fit, denoise them; see the module doc."""
    cfg = config or EditConfig()
    return decode_plan(engine, plan_edits(engine, ids, window, protect=protect, config=cfg), cfg)


@dataclass
class EditPlan:
    """The scoring stage's output: the (trimmed) sequence, where it sits in the caller's ids, the spans."""
    ids: list[int]
    base: int                # seq position 0 = caller's ids[base]
    found: NextEdits


def plan_edits(engine, ids: Sequence[int], window: Span, *, protect: Optional[Span] = None,
               config: Optional[EditConfig] = None) -> EditPlan:
    """Stage 1: score the window (1 + num_passes forwards) and pick the spans to re-mask."""
    cfg = config or EditConfig()
    ids = engine._check_ids(ids, "ids")
    w0, w1 = max(0, int(window[0])), min(len(ids), int(window[1]))
    if w1 - w0 > cfg.max_window_tokens:   # keep the part around the edit
        centre = (protect[0] + protect[1]) // 2 if protect else (w0 + w1) // 2
        w0 = max(w0, min(centre - cfg.max_window_tokens // 2, w1 - cfg.max_window_tokens))
        w1 = w0 + cfg.max_window_tokens
    if w1 <= w0:
        return EditPlan([], 0, NextEdits(window=(w0, max(w0, w1))))
    # the context that fits the model beside the window (its far ends go first)
    room = max(0, engine.max_context - (w1 - w0) - cfg.slack * cfg.max_spans)
    keep_left = min(w0, max(room // 2, room - (len(ids) - w1)))
    keep_right = min(len(ids) - w1, room - keep_left)
    base = w0 - keep_left
    seq = ids[base:w1 + keep_right]
    win = (w0 - base, w1 - base)
    words = _word_keys(engine, seq[win[0]:win[1]])
    passes = assign_passes(words, cfg.num_passes, cfg.group_words)
    probs, best, forwards = score_window(engine, seq, win, passes, cfg)
    skip = {i for i in range(len(words)) if _blank(engine, seq[win[0] + i])}
    spans = pick_spans(probs, best, win, _shift(protect, -base), cfg, skip)
    found = NextEdits(token_probs=probs, token_best=best, window=(w0, w1), num_forwards=forwards,
                      suspects=[(a + base, b + base, sc) for a, b, sc in spans])
    return EditPlan(seq, base, found)


def decode_plan(engine, plan: EditPlan, config: Optional[EditConfig] = None) -> NextEdits:
    """Stage 2: re-mask the planned spans and denoise them together (at most `steps` forwards)."""
    cfg = config or EditConfig()
    out, base, ids = plan.found, plan.base, plan.ids
    if not out.suspects:
        return out
    spans = [(a - base, b - base) for a, b, _ in out.suspects]
    decoded, n = denoise_spans(engine, ids, spans, cfg)
    out.num_forwards += n
    for (a, b, score), (new, conf) in zip(out.suspects, decoded):
        out.decoded.append(EditProposal(a, b, new, conf, score))
        if new != ids[a - base:b - base] and conf >= cfg.min_confidence:
            out.proposals.append(EditProposal(a, b, list(new), conf, score))
    return out


def _shift(span: Optional[Span], by: int) -> Optional[Span]:
    return None if span is None else (span[0] + by, span[1] + by)


# ------------------------------------------------------------------------------------------------ scoring
def _word_keys(engine, window_ids: list[int]) -> list[Optional[str]]:
    """Each token's word (stripped text) when it is identifier-like, else None."""
    tok = engine.tokenizer
    if tok is None:
        return [None] * len(window_ids)
    cache: dict[int, Optional[str]] = {}
    out = []
    for t in window_ids:
        if t not in cache:
            words = _WORD.findall(tok.decode([t], skip_special_tokens=False))
            cache[t] = words[-1] if words else None   # "(path" and " path" are the same word
        out.append(cache[t])
    return out


def _blank(engine, token: int) -> bool:
    """Whitespace and special tokens are never proposed for an edit on their own (reformatting is noise)."""
    if token in engine.stop_ids or token == engine.mask_id:
        return True
    return engine.tokenizer is not None and engine.tokenizer.decode([token], skip_special_tokens=False).strip() == ""


def assign_passes(words: Sequence[Optional[str]], num_passes: int, group_words: bool) -> list[int]:
    """Pass index per window position: words by first occurrence (all occurrences together), others by stride."""
    order: dict[str, int] = {}
    out = []
    for i, w in enumerate(words):
        if group_words and w is not None:
            out.append(order.setdefault(w, len(order)) % num_passes)
        else:
            out.append(i % num_passes)
    return out


def score_window(engine, ids: list[int], window: Span, passes: list[int], cfg: EditConfig
                 ) -> tuple[list[float], list[float], int]:
    """p(token | the rest) and the most likely token's p per window position, each read while masked;
    returns (probs, best, forwards run)."""
    w0, w1 = window
    shift = int(engine.config.logit_shift)
    x = torch.tensor([ids], dtype=torch.long, device=engine.device)
    n = x.shape[1]
    i0 = max(0, w0 - shift)          # the position before the window predicts its first token
    positions = torch.arange(n, device=engine.device)[None]
    probs = torch.ones(w1 - w0)
    best = torch.ones(w1 - w0)
    forwards = 0
    past = None
    with torch.no_grad():
        if cfg.cache == "dual":
            out = engine.model(x, position_ids=positions, use_cache=True, logits_index=torch.zeros(1, dtype=torch.long))
            cache = make_cache("dual", engine.config.num_hidden_layers, 1, engine.config.num_key_value_heads, n,
                               engine.config.head_dim, engine.dtype, engine.device)
            cache.update(out.key_values, (i0, w1))
            past = cache.past()
            forwards += 1
        groups = [c for c in ([i for i, q in enumerate(passes) if q == p] for p in range(max(passes, default=-1) + 1))
                  if c]
        if past is not None and groups:   # every pass in one batched forward of the window against the context
            xm = x[:, i0:w1].repeat(len(groups), 1)
            width = max(len(c) for c in groups)
            index = torch.zeros(len(groups), width, dtype=torch.long, device=engine.device)
            for r, cols in enumerate(groups):
                at = torch.tensor(cols, dtype=torch.long, device=engine.device) + w0
                xm[r, at - i0] = engine.mask_id
                index[r] = torch.cat(((at - shift).clamp(min=0) - i0, (at[:1] - shift).clamp(min=0).expand(width - len(cols)) - i0))
            batch_past = [(k.expand(len(groups), -1, -1, -1), v.expand(len(groups), -1, -1, -1)) for k, v in past]
            logits = engine.model(xm, position_ids=positions[:, i0:w1].expand(len(groups), -1),
                                  past_key_values=batch_past, logits_index=index).logits       # [R, width, V]
            for r, cols in enumerate(groups):
                logp = torch.log_softmax(logits[r, :len(cols)].float(), dim=-1)
                at = torch.tensor(cols) + w0
                probs[torch.tensor(cols)] = logp.gather(-1, x[0, at][:, None]).squeeze(-1).exp().cpu()
                best[torch.tensor(cols)] = logp.max(-1).values.exp().cpu()
            return probs.tolist(), best.tolist(), forwards + 1
        for cols in groups:
            at = torch.tensor(cols, dtype=torch.long, device=engine.device) + w0   # absolute positions
            out_pos = (at - shift).clamp(min=0)
            if past is None:
                xm = x.clone()
                xm[0, at] = engine.mask_id
                logits = engine.model(xm, position_ids=positions, logits_index=out_pos).logits[0]
            else:
                xm = x[:, i0:w1].clone()
                xm[0, at - i0] = engine.mask_id
                logits = engine.model(xm, position_ids=positions[:, i0:w1], past_key_values=past,
                                      logits_index=out_pos - i0).logits[0]
            logp = torch.log_softmax(logits.float(), dim=-1)                   # [K, V]
            probs[torch.tensor(cols)] = logp.gather(-1, x[0, at][:, None]).squeeze(-1).exp().cpu()
            best[torch.tensor(cols)] = logp.max(-1).values.exp().cpu()
            forwards += 1
    return probs.tolist(), best.tolist(), forwards


def pick_spans(probs: Sequence[float], best: Sequence[float], window: Span, protect: Optional[Span],
               cfg: EditConfig, skip: set[int] = frozenset()) -> list[tuple[int, int, float]]:
    """Runs of suspect tokens (absolute [a, b), min p), outside `protect`, the `max_spans` least likely, in order.

    Suspect: p(token) below `max_token_prob` *and* below `max_ratio` x the model's best guess there, so
    a token that is merely rare (a model unsure everywhere) is not taken for one that no longer fits."""
    w0 = window[0]
    suspect = [i for i, p in enumerate(probs) if p < cfg.max_token_prob and p < cfg.max_ratio * best[i]
               and i not in skip and not (protect and protect[0] <= w0 + i < protect[1])]
    runs: list[list[int]] = []
    for i in suspect:
        if runs and i - runs[-1][-1] <= cfg.merge_gap + 1 and not _crosses(runs[-1][-1], i, w0, protect):
            runs[-1].append(i)
        else:
            runs.append([i])
    spans = [(w0 + r[0], w0 + r[-1] + 1, min(probs[j] for j in r)) for r in runs
             if r[-1] + 1 - r[0] <= cfg.max_span_tokens]
    spans = sorted(spans, key=lambda s: s[2])[:cfg.max_spans]
    return sorted(spans)


def _crosses(i: int, j: int, w0: int, protect: Optional[Span]) -> bool:
    return bool(protect) and w0 + i < protect[1] and w0 + j >= protect[0]


# ------------------------------------------------------------------------------------------------ decoding
def denoise_spans(engine, ids: list[int], spans: list[Span], cfg: EditConfig) -> tuple[list[tuple[list[int], float]], int]:
    """Re-mask every span (+ slack) and denoise them together; (new ids, confidence) per span, forwards run."""
    seq, holes, at = [], [], 0
    for a, b in spans:
        seq += ids[at:a]
        holes.append((len(seq), len(seq) + b - a + cfg.slack))
        seq += [engine.mask_id] * (b - a + cfg.slack)
        at = b
    seq += ids[at:]
    dev = engine.device
    x = torch.tensor([seq], dtype=torch.long, device=dev)
    n = x.shape[1]
    hole_pos = torch.tensor([p for h0, h1 in holes for p in range(h0, h1)], dtype=torch.long, device=dev)
    shift = int(engine.config.logit_shift)
    out_pos = (hole_pos - shift).clamp(min=0)
    positions = torch.arange(n, device=dev)[None]
    # a cached step runs only the holes and the positions whose outputs predict them (the dual cache's
    # idea with several windows): everything else attends as K/V from the first, full forward
    active = torch.unique(torch.cat((hole_pos, out_pos)))                  # sorted
    rest = torch.ones(n, dtype=torch.bool, device=dev)
    rest[active] = False
    rest = rest.nonzero().squeeze(-1)
    active_index = torch.searchsorted(active, out_pos)                     # out_pos within `active`
    tokens = x[:, hole_pos].clone()
    masked = torch.ones_like(tokens, dtype=torch.bool)
    conf = torch.zeros(tokens.shape, dtype=torch.float32, device=dev)
    generator = torch.Generator(device=dev)
    generator.manual_seed(0)
    steps = min(cfg.steps, int(hole_pos.numel()))
    past = None
    forwards = 0
    with torch.no_grad():
        step = 0
        while bool(masked.any()):
            if past is None:
                out = engine.model(x, position_ids=positions, use_cache=cfg.cache == "dual", logits_index=out_pos)
                if cfg.cache == "dual":   # the context's K/V for the remaining steps, computed with the holes masked
                    past = [(k[:, :, rest], v[:, :, rest]) for k, v in out.key_values]
            else:
                out = engine.model(x[:, active], position_ids=active[None], past_key_values=past,
                                   logits_index=active_index)
            forwards += 1
            denoise_step(out.logits, tokens, masked, conf, step=min(step, steps - 1), steps=steps, alg=cfg.alg,
                         threshold=cfg.threshold, generator=generator)
            x[0, hole_pos] = tokens[0]
            step += 1
    result, k = [], 0
    for h0, h1 in holes:
        width = h1 - h0
        span_tokens, span_conf = tokens[0, k:k + width].tolist(), conf[0, k:k + width].tolist()
        k += width
        new = []
        for t in span_tokens:
            if t in engine.stop_ids:
                break
            new.append(int(t))
        result.append((new, float(min(span_conf)) if span_conf else 0.0))
    return result, forwards
