"""CoDA's forward (noising) process and the row transformations around it (spec 3.2-3.5).

Pure functions on [B, L] tensors with an explicit `torch.Generator`, so a step's corruption is a function
of the generator state alone (checkpointed, hence bit-exact resume). Order of operations per batch:

1. maskable set: everything, or SFT: not the prompt;
2. row options: FIM rewrite (ours), S1 unmaskable prefix, S2 truncated suffix (pads, never masked;
   only rows without S1), then the infill hole with a padding tail (ours; only the hole is maskable);
3. sigma_b = (1 - eps) * u + eps, weight 1 / sigma_b;
4. S3 block size k (one per batch in CoDA's code, `block_mode`) and the corruption itself: per token
   with prob sigma (k = 1), or windows of k maskable tokens each chosen with prob 1 - (1 - sigma)^(1/k)
   so every interior token is still masked with prob sigma.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch


@dataclass
class MaskingSettings:
    """One step's masking knobs (curriculum lists already resolved for the epoch)."""

    sampling_eps: float = 1e-3
    prefix_probability: float = 0.0
    truncate_probability: float = 0.0
    block_masking_probability: float = 0.0
    mask_block_sizes: list[int] = field(default_factory=lambda: [4, 8, 16, 32])
    block_mode: str = "switch"  # switch | batch | row (see ObjectiveConfig)
    infill_pad_probability: float = 0.0
    max_infill_len: int = 64
    fim_probability: float = 0.0


@dataclass
class SpecialIds:
    mask: int
    pad: int
    eos: int
    fim_prefix: Optional[int] = None
    fim_middle: Optional[int] = None
    fim_suffix: Optional[int] = None


@dataclass
class NoisyBatch:
    input_ids: torch.Tensor  # [B, L] noisy input (mask id where corrupted)
    targets: torch.Tensor  # [B, L] clean ids (after row rewrites such as S2 / FIM)
    loss_mask: torch.Tensor  # [B, L] bool: a loss is taken at j (predicted from position j-1)
    weights: torch.Tensor  # [B] float: 1 / sigma
    maskable: torch.Tensor  # [B, L] bool (for tests and diagnostics)
    sigma: torch.Tensor  # [B]
    block_size: torch.Tensor  # [B] int: k used per row
    rewritten: torch.Tensor  # [B] bool: FIM / infill rows whose tokens moved (their segment ids no longer apply)


def _rand(shape, gen: torch.Generator, device) -> torch.Tensor:
    return torch.rand(shape, generator=gen, device=device)


def _randint(low: int, high: int, shape, gen: torch.Generator, device) -> torch.Tensor:
    """Uniform ints in [low, high] (inclusive)."""
    return torch.randint(low, high + 1, shape, generator=gen, device=device)


def sample_sigma(batch: int, eps: float, gen: torch.Generator, device) -> torch.Tensor:
    """sigma_b = (1 - eps) * u + eps, u ~ U(0, 1) (spec 3.2.4)."""
    return (1.0 - eps) * _rand((batch,), gen, device) + eps


def fim_rows(x: torch.Tensor, rows: torch.Tensor, ids: SpecialIds, gen: torch.Generator) -> torch.Tensor:
    """Rewrite selected rows as PSM FIM: <fim_prefix> p <fim_suffix> s <fim_middle> m <eos>, cut to L.

    The eos after the middle is what teaches an AR+FIM model to end a hole (as StarCoder's
    <|endoftext|> after the middle does); without it the decode runs to its token budget."""
    if ids.fim_prefix is None or ids.fim_middle is None or ids.fim_suffix is None:
        raise ValueError("FIM rows need <|fim_prefix|>, <|fim_middle|> and <|fim_suffix|> in the tokenizer")
    out = x.clone()
    L = x.shape[1]
    for b in torch.nonzero(rows).flatten().tolist():
        cut = torch.sort(_randint(0, L - 4, (2,), gen, x.device)).values.tolist()
        p, m, s = x[b, :cut[0]], x[b, cut[0]:cut[1]], x[b, cut[1]:L - 4]
        t = lambda i: x.new_tensor([i])  # noqa: E731
        out[b] = torch.cat((t(ids.fim_prefix), p, t(ids.fim_suffix), s, t(ids.fim_middle), m, t(ids.eos)))
    return out


def infill_pad_rows(x: torch.Tensor, maskable: torch.Tensor, rows: torch.Tensor, ids: SpecialIds, max_len: int,
                    gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Infill rows whose hole ends early: prefix | c real tokens + (h - c) pads | suffix.

    The hole (budget h, 1 <= h <= max_len) is the only maskable span, so the model learns to fill a
    fixed-size hole with the text that belongs there and then pads — how the engine gets
    variable-length infills from a fixed mask budget. Rows are cut back to L after the insertion.
    """
    x, maskable = x.clone(), maskable.clone()
    L = x.shape[1]
    for b in torch.nonzero(rows).flatten().tolist():
        h = int(_randint(1, max(1, min(max_len, L // 2)), (1,), gen, x.device))
        c = int(_randint(0, h, (1,), gen, x.device))
        a = int(_randint(0, L - h, (1,), gen, x.device))
        pads = x.new_full((h - c,), ids.pad)
        row = torch.cat((x[b, :a + c], pads, x[b, a + c:]))[:L]
        x[b] = row
        maskable[b] = False
        maskable[b, a:a + h] = True
    return x, maskable


def prefix_and_truncate(x: torch.Tensor, maskable: torch.Tensor, s: MaskingSettings, ids: SpecialIds,
                        gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """S1 (unmaskable prefix) then S2 (pad suffix) on rows not chosen for S1 (spec 3.2.2-3)."""
    B, L = x.shape
    dev = x.device
    x, maskable = x.clone(), maskable.clone()
    pos = torch.arange(L, device=dev)[None, :]
    s1 = torch.zeros(B, dtype=torch.bool, device=dev)
    if s.prefix_probability > 0:
        s1 = _rand((B,), gen, dev) < s.prefix_probability
        ell = _randint(1, L - 1, (B,), gen, dev)
        maskable &= ~(s1[:, None] & (pos < ell[:, None]))
    if s.truncate_probability > 0:
        s2 = (_rand((B,), gen, dev) < s.truncate_probability) & ~s1
        tau = _randint(1, L - 1, (B,), gen, dev)
        x = torch.where(s2[:, None] & (pos >= tau[:, None]), torch.full_like(x, ids.pad), x)
        maskable &= x != ids.pad  # CoDA applies this to every row once S2 is on (spec 3.2.3 note)
    return x, maskable


def block_sizes(batch: int, s: MaskingSettings, gen: torch.Generator, device) -> torch.Tensor:
    """Per-row span size k (1 = token-wise masking), following `block_mode`."""
    ones = torch.ones(batch, dtype=torch.long, device=device)
    if s.block_masking_probability <= 0 or not s.mask_block_sizes:
        return ones
    sizes = torch.tensor(s.mask_block_sizes, dtype=torch.long, device=device)
    if s.block_mode == "row":
        on = _rand((batch,), gen, device) < s.block_masking_probability
        k = sizes[_randint(0, len(sizes) - 1, (batch,), gen, device)]
        return torch.where(on, k, ones)
    if s.block_mode == "batch" and float(_rand((1,), gen, device)) >= s.block_masking_probability:
        return ones
    k = sizes[_randint(0, len(sizes) - 1, (1,), gen, device)]  # switch: one k for the batch (CoDA's code)
    return k.expand(batch).clone()


def corrupt(maskable: torch.Tensor, sigma: torch.Tensor, k: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Which positions become the mask token: [B, L] bool (spec 3.2.6)."""
    B, L = maskable.shape
    u = _rand((B, L), gen, maskable.device)
    masked = (u < sigma[:, None]) & maskable
    for kk in torch.unique(k).tolist():
        if kk == 1:
            continue
        rows = k == kk
        if L < kk:
            masked[rows] = False
            continue
        m = maskable[rows].float()
        # window s is eligible iff all kk positions s..s+kk-1 are maskable
        eligible = torch.nn.functional.avg_pool1d(m[:, None], kk, stride=1)[:, 0] > 1 - 1e-6  # [b, L-kk+1]
        p_win = 1.0 - (1.0 - sigma[rows]).clamp_min(0) ** (1.0 / kk)
        chosen = (u[rows][:, :L - kk + 1] < p_win[:, None]) & eligible
        spans = torch.zeros_like(m, dtype=torch.bool)
        for o in range(kk):
            spans[:, o:o + L - kk + 1] |= chosen
        masked[rows] = spans
    return masked


def noise_batch(tokens: torch.Tensor, s: MaskingSettings, ids: SpecialIds, gen: torch.Generator, *,
                src_mask: Optional[torch.Tensor] = None) -> NoisyBatch:
    """Clean rows -> a diffusion training batch (noisy input, targets, loss positions, 1/sigma weights)."""
    B, L = tokens.shape
    dev = tokens.device
    x = tokens
    maskable = torch.ones_like(tokens, dtype=torch.bool) if src_mask is None else ~src_mask
    rewritten = torch.zeros(B, dtype=torch.bool, device=dev)
    if s.fim_probability > 0:
        fim = _rand((B,), gen, dev) < s.fim_probability
        x, rewritten = fim_rows(x, fim, ids, gen), rewritten | fim
    if src_mask is None:  # S1/S2 are pre/mid-training options; SFT forces them off (spec 3.3)
        x, maskable = prefix_and_truncate(x, maskable, s, ids, gen)
    if s.infill_pad_probability > 0:  # after S2, so the hole's pads stay maskable (they are the lesson)
        holes = _rand((B,), gen, dev) < s.infill_pad_probability
        x, maskable = infill_pad_rows(x, maskable, holes, ids, s.max_infill_len, gen)
        rewritten |= holes
    sigma = sample_sigma(B, s.sampling_eps, gen, dev)
    k = block_sizes(B, s, gen, dev)
    masked = corrupt(maskable, sigma, k, gen)
    noisy = torch.where(masked, torch.full_like(x, ids.mask), x)
    loss_mask = masked.clone()
    loss_mask[:, 0] = False  # position 0 has no predecessor to predict it (spec 2.4)
    return NoisyBatch(input_ids=noisy, targets=x, loss_mask=loss_mask, weights=1.0 / sigma, maskable=maskable,
                      sigma=sigma, block_size=k, rewritten=rewritten)


def progressive_src_mask(src_mask: torch.Tensor, step: int, total_steps: int, ratio: float) -> torch.Tensor:
    """SFT stage-1 progressive prompt conditioning (spec 3.3): the first floor(r * prompt_len) prompt tokens
    stay unmaskable, r = clamp(step / (ratio * total_steps), 0, 1)."""
    if ratio <= 0:
        return src_mask
    r = min(max(step / (ratio * total_steps), 0.0), 1.0)
    keep = torch.floor(src_mask.sum(1).float() * r).long()  # [B]
    pos = torch.arange(src_mask.shape[1], device=src_mask.device)[None, :]
    return src_mask & (pos < keep[:, None])
