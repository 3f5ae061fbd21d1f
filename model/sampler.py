"""The denoising sampler as pure functions: logits -> probabilities -> confidence -> positions -> tokens.

Semantics follow CoDA's Dream-derived `generation_utils.py` (spec §5.2) so results can be checked
against a slow reference: temperature, then top-p (smallest sorted prefix whose cumulative probability
exceeds p, top token always kept), then top-k, then softmax; greedy (temperature 0) takes the argmax.
Confidence per algorithm: `maskgit_plus` = probability of the proposed token, `topk_margin` = p1 - p2,
`entropy` = sum p log(p + 1e-10) (negative entropy), `origin` = none (random order). The linear
schedule `t = linspace(1, eps, steps + 1)` reveals floor(m * (1 - s/t)) of the m masked positions at
step i (all remaining at the last step), the most confident first, or sampled without replacement
from softmax(confidence / alg_temp).

On top of that, confidence-threshold parallel decoding (Fast-dLLM): reveal every masked position
whose proposed token has probability >= threshold, and at least the fixed schedule's count (>= 1; the most confident by the
algorithm's own confidence) per step; on the last allowed step everything left is revealed.

Everything here works on one "window" of hole positions: logits [C, W, V] for tokens [C, W]. The
randomness comes from the `torch.Generator` passed in, in a fixed order (token draws for all masked
positions in row-major order, then position draws row by row), which is what makes seeds reproduce.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from coda_model.decode_config import ALGORITHMS


def timesteps(steps: int, eps: float) -> torch.Tensor:
    """The linear 1 -> eps schedule: steps + 1 values (float64 so the ratios match the reference)."""
    return torch.linspace(1.0, eps, steps + 1, dtype=torch.float64)


def top_p_logits(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest sorted prefix whose cumulative probability exceeds top_p (top token always kept)."""
    sorted_logits, sorted_idx = torch.sort(logits, descending=True)
    cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
    remove = cum > top_p
    remove[..., 1:] = remove[..., :-1].clone()
    remove[..., 0] = False
    mask = torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove)
    return logits.masked_fill(mask, torch.finfo(logits.dtype).min)


def top_k_logits(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    top_k = min(top_k, logits.size(-1))
    kth = torch.topk(logits, top_k)[0][..., -1, None]
    return logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)


class Probs:
    """Filtered distributions over the vocabulary for N positions: probabilities and log-probabilities.

    Both come from one `log_softmax` (then one `exp`), which is cheaper than softmax + log over a
    151,936-row vocabulary and gives the entropy without the reference's `+ 1e-10` (a difference
    below 1e-9 in the confidence)."""

    def __init__(self, logp: torch.Tensor) -> None:
        self.logp = logp            # [N, V] float32
        self.probs = logp.exp()     # [N, V] float32

    def __getitem__(self, index) -> "Probs":
        out = Probs.__new__(Probs)
        out.logp, out.probs = self.logp[index], self.probs[index]
        return out


def logits_to_probs(logits: torch.Tensor, temperature: float = 0.0, top_p: Optional[float] = None,
                    top_k: Optional[int] = None) -> Probs:
    """[N, V] logits -> filtered float32 distributions after temperature, top-p and top-k."""
    logits = logits.float()
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        logits = top_p_logits(logits, top_p)
    if top_k is not None:
        logits = top_k_logits(logits, top_k)
    return Probs(torch.log_softmax(logits, dim=-1))


def sample_tokens(dist: Probs, temperature: float, alg: str,
                  generator: Optional[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """N distributions -> (x0 [N], p(x0) [N], alg confidence [N]).

    With temperature > 0, x0 is drawn (one multinomial call over all N rows, in order); else argmax.
    """
    probs = dist.probs
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        p_x0 = torch.gather(probs, -1, x0[:, None]).squeeze(-1)
    else:
        p_x0, x0 = probs.max(dim=-1)
    if alg == "topk_margin":
        top2 = torch.topk(probs, 2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
    elif alg == "entropy":  # sum p log p; filtered-out entries have p = 0 and a finite logp
        confidence = torch.sum(probs * dist.logp, dim=-1)
    else:  # maskgit_plus (and origin, where it is only reported)
        confidence = p_x0
    return x0, p_x0, confidence


def num_to_reveal(num_masked: int, step: int, steps: int, ts: torch.Tensor) -> int:
    """floor(m * (1 - s/t)) at step < steps-1, all remaining at the last step (spec §5.2.5)."""
    if step >= steps - 1:
        return num_masked
    t, s = ts[step].item(), ts[step + 1].item()
    return int(num_masked * (1 - s / t))


def choose_positions(confidence: torch.Tensor, masked: torch.Tensor, k: int, alg_temp: Optional[float],
                     generator: Optional[torch.Generator]) -> torch.Tensor:
    """One row: [W] confidence, [W] bool masked -> [k] positions to reveal (top-k or sampled)."""
    if k <= 0:
        return torch.empty(0, dtype=torch.long, device=confidence.device)
    full = torch.where(masked, confidence, torch.full_like(confidence, -torch.inf))
    if not alg_temp:
        return torch.topk(full, k).indices
    weights = F.softmax(full / alg_temp, dim=-1)
    return torch.multinomial(weights, k, replacement=False, generator=generator)


def denoise_step(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, confidence: torch.Tensor, *,
                 step: int, steps: int, alg: str, temperature: float = 0.0, top_p: Optional[float] = None,
                 top_k: Optional[int] = None, alg_temp: Optional[float] = None, eps: float = 1e-3,
                 threshold: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 columns: Optional[torch.Tensor] = None) -> int:
    """One denoise step on a window, in place. Returns how many positions were revealed.

    logits: [C, W, V] already aligned with the window's positions (shifted), or [C, K, V] for the
    window columns `columns` [K] only (they must cover every masked position: the engine skips the
    lm_head where nothing is masked); tokens: [C, W] long; masked: [C, W] bool;
    confidence: [C, W] float (p of the revealed token).
    """
    assert tokens.shape == masked.shape == confidence.shape, "window shapes disagree"
    if alg not in ALGORITHMS:
        raise ValueError(f"unknown alg {alg!r}: use one of {', '.join(ALGORITHMS)}")
    num_rows = tokens.shape[0]
    if not masked.any():
        return 0
    ts = timesteps(steps, eps)
    rows, cols = masked.nonzero(as_tuple=True)  # row-major order
    if columns is None:
        assert logits.shape[:2] == tokens.shape, "logits do not cover the window"
        logit_cols = cols
    else:
        to_sub = torch.full((tokens.shape[1],), -1, dtype=torch.long, device=tokens.device)
        to_sub[columns] = torch.arange(columns.numel(), device=tokens.device)
        logit_cols = to_sub[cols]
        assert bool((logit_cols >= 0).all()), "logits are missing a masked column"
    revealed = 0
    if alg == "origin":
        last = step >= steps - 1
        p_transfer = 1.0 if last else 1 - ts[step + 1].item() / ts[step].item()
        draw = torch.rand(rows.shape[0], generator=generator, device=tokens.device) < p_transfer
        probs = logits_to_probs(logits[rows, logit_cols], temperature, top_p, top_k)
        if threshold is not None:
            # proposals for every masked position: confident ones join the random reveals
            x0, p_x0, _ = sample_tokens(probs, temperature, alg, generator)
            draw = draw | (p_x0 >= threshold)
            if not draw.any():
                draw[p_x0.argmax()] = True
        else:
            x0 = torch.full_like(rows, -1)
            p_x0 = torch.zeros(rows.shape[0], device=tokens.device)
            if draw.any():
                x0[draw], p_x0[draw] = sample_tokens(probs[draw], temperature, alg, generator)[:2]
        sel_r, sel_c = rows[draw], cols[draw]
        tokens[sel_r, sel_c] = x0[draw]
        confidence[sel_r, sel_c] = p_x0[draw].to(confidence.dtype)
        masked[sel_r, sel_c] = False
        return int(draw.sum())

    probs = logits_to_probs(logits[rows, logit_cols], temperature, top_p, top_k)
    x0, p_x0, conf = sample_tokens(probs, temperature, alg, generator)
    # scatter the flat proposals back to [C, W]
    prop_tok = torch.full_like(tokens, -1)
    prop_p = torch.zeros(tokens.shape, dtype=torch.float32, device=tokens.device)
    prop_conf = torch.full(tokens.shape, -torch.inf, dtype=torch.float32, device=tokens.device)
    prop_tok[rows, cols], prop_p[rows, cols], prop_conf[rows, cols] = x0, p_x0, conf.float()
    for r in range(num_rows):
        row_masked = masked[r]
        m = int(row_masked.sum())
        if m == 0:
            continue
        if threshold is not None:
            if step >= steps - 1:
                pick = row_masked.clone()
            else:
                # confident positions, plus at least the fixed schedule's count (>= 1): the step budget
                # is kept, so an unsure model never dumps the whole hole on the last allowed step
                pick = row_masked & (prop_p[r] >= threshold)
                floor = max(1, num_to_reveal(m, step, steps, ts))
                if int(pick.sum()) < floor:
                    pick[choose_positions(prop_conf[r], row_masked, floor, alg_temp, generator)] = True
            idx = pick.nonzero(as_tuple=True)[0]
        else:
            idx = choose_positions(prop_conf[r], row_masked, num_to_reveal(m, step, steps, ts), alg_temp, generator)
        tokens[r, idx] = prop_tok[r, idx]
        confidence[r, idx] = prop_p[r, idx].to(confidence.dtype)
        masked[r, idx] = False
        revealed += int(idx.numel())
    return revealed
