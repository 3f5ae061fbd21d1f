"""Loss functions: CoDA's weighted masked cross-entropy and the autoregressive baseline.

Both return the *sum* of per-token losses of a micro-batch (and the number of target tokens, as a tensor); the trainer divides by a normaliser that
depends only on the global batch (CoDA: B * L, spec 3.2.7; AR: B * (L - 1)). Summing first is what makes
1 process, N processes and gradient accumulation give the same loss and gradients for the same global
batch.

With `logits="masked"` the LM head runs only at the positions that predict a masked token (j - 1 for a
mask at j): the head is the largest matmul of a small model and most of memory at 150k vocab.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from coda_model.network import CodaLM, segment_attention_mask
from coda_train.masking import NoisyBatch


def attention_for(segment_ids: Optional[torch.Tensor]) -> Optional[torch.Tensor]:
    """Segment packing: a [B, 1, L, L] mask keeping attention inside each document, or None (full)."""
    if segment_ids is None:
        return None
    return segment_attention_mask(segment_ids)


def diffusion_loss_sum(model: CodaLM, nb: NoisyBatch, *, segment_ids: Optional[torch.Tensor] = None,
                       logits: str = "masked") -> tuple[torch.Tensor, torch.Tensor]:
    """sum_b sum_{j>=1} w_b * 1[masked(b, j)] * CE(logits(b, j-1), x(b, j)); also the masked count."""
    mask = attention_for(segment_ids)
    lm = nb.loss_mask
    if logits == "full":  # static shapes (XLA): no host sync here
        num = lm.sum()
        out = model(nb.input_ids, attention_mask=mask).logits.float()  # [B, L, V]
        ce = F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), nb.targets[:, 1:].reshape(-1), reduction="none")
        ce = ce.view(lm.shape[0], -1)
        return (ce * lm[:, 1:] * nb.weights[:, None]).sum(), num
    B = lm.shape[0]
    counts = lm.sum(1)
    num = counts.sum()
    K = max(1, int(counts.max()))
    # stable sort puts the masked positions of each row first, in order
    order = torch.sort((~lm).to(torch.int8), dim=1, stable=True).indices[:, :K]  # [B, K] target positions
    valid = torch.arange(K, device=lm.device)[None, :] < counts[:, None]
    index = torch.where(valid, order - 1, torch.zeros_like(order)).clamp_min(0)  # predictor positions
    out = model(nb.input_ids, attention_mask=mask, logits_index=index).logits.float()  # [B, K, V]
    targets = torch.gather(nb.targets, 1, order)
    ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), targets.reshape(-1), reduction="none").view(B, K)
    return (ce * valid * nb.weights[:, None]).sum(), num


def ar_loss_sum(model: CodaLM, tokens: torch.Tensor, *, segment_ids: Optional[torch.Tensor] = None,
                src_mask: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Causal next-token loss summed over positions 1..L-1 (prompt positions excluded for SFT rows).
    FIM rows are rewritten by the caller (`masking.fim_rows`) on the whole global batch."""
    out = model(tokens, attention_mask=attention_for(segment_ids), causal=True).logits.float()
    ce = F.cross_entropy(out[:, :-1].reshape(-1, out.shape[-1]), tokens[:, 1:].reshape(-1), reduction="none")
    ce = ce.view(tokens.shape[0], -1)
    keep = torch.ones_like(ce, dtype=torch.bool) if src_mask is None else ~src_mask[:, 1:]
    return (ce * keep).sum(), keep.sum()
