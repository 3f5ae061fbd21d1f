"""Several holes denoised in one batch: rows of different prefix/suffix lengths, each stopping on its own.

    from coda_model.batching import HoleRequest, infill_batch
    for state in infill_batch(engine, [HoleRequest(p1, s1), HoleRequest(p2, s2)], length=16, config=cfg):
        for row in range(state.tokens.shape[0]):
            if not state.masked[row].any():   # this row is finished: its tokens never change again
                ...

Why a packing, not a new loop: `Engine._denoise` already decodes a [B, N] batch whose rows share the
hole's columns, with a key-padding mask and positions from the mask's cumsum (what `generate` uses).
So each row is laid out as `pad… ‖ prefix ‖ [MASK] × length ‖ suffix ‖ …pad`: prefixes are left-padded
to the longest, suffixes right-padded, pads are masked out of attention, and every row's positions start
at its own first token. A row therefore sees exactly what it would see alone, and with greedy proposals
(temperature 0, no position sampling) its tokens equal `engine.infill` on that row alone. With sampling,
rows share one RNG stream, so a seeded batch is reproducible but differs from one-by-one.

Rows with an empty prefix are not packed with rows that have one: under CoDA's logit shift the first
hole token of an empty-prefix row is read at its own position, which a left-padded row cannot mirror
(`pack_rows` refuses the mix). Rows share the hole length (and the decode config): the block/step plan depends on the length, so rows
of different lengths would not decode as they do alone. Callers group requests by (length, config).
A row whose hole is fully revealed is skipped by the sampler (its "own stopping"); the batch runs until
the last row is done. Context that does not fit is truncated per row as `Engine.fit_context` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import torch

from coda_model.decode_config import DecodeConfig
from coda_model.engine import DenoiseState, Engine


@dataclass(frozen=True)
class HoleRequest:
    """One row: the token ids before and after the hole."""

    prefix_ids: Sequence[int]
    suffix_ids: Sequence[int]


@dataclass(frozen=True)
class PackedBatch:
    """The model input for a batch: ids [B, N], key mask [B, N] (None when no row is padded), hole start."""

    ids: torch.Tensor
    key_mask: Optional[torch.Tensor]
    hole_start: int
    truncated: list[bool]    # per row: context was cut to fit the model


def pack_rows(engine: Engine, requests: Sequence[HoleRequest], length: int) -> PackedBatch:
    """Lay the rows out so their holes share columns: left-pad prefixes, right-pad suffixes."""
    rows, truncated = [], []
    for i, req in enumerate(requests):
        prefix = engine._check_ids(req.prefix_ids, f"row {i} prefix_ids")
        suffix = engine._check_ids(req.suffix_ids, f"row {i} suffix_ids")
        fit = engine.fit_context(prefix, suffix, length)
        truncated.append(len(fit[0]) + len(fit[1]) < len(prefix) + len(suffix))
        rows.append(fit)
    if len({bool(p) for p, _ in rows}) > 1:
        raise ValueError("rows with an empty prefix cannot share a batch with rows that have one: batch them apart")
    width_pre = max(len(p) for p, _ in rows)
    width_suf = max(len(s) for _, s in rows)
    pad = int(engine.config.pad_token_id)
    ids, keep = [], []
    for p, s in rows:
        lpad, rpad = width_pre - len(p), width_suf - len(s)
        ids.append([pad] * lpad + p + [engine.mask_id] * length + s + [pad] * rpad)
        keep.append([False] * lpad + [True] * (len(p) + length + len(s)) + [False] * rpad)
    x = torch.tensor(ids, dtype=torch.long, device=engine.device)
    padded = any(not all(row) for row in keep)
    key_mask = torch.tensor(keep, device=engine.device) if padded else None
    return PackedBatch(x, key_mask, width_pre, truncated)


def infill_batch(engine: Engine, requests: Sequence[HoleRequest], *, length: int,
                 config: Optional[DecodeConfig] = None) -> Iterator[DenoiseState]:
    """Fill a `length`-token hole in every row at once; yields a DenoiseState (row r = request r) per step."""
    if not requests:
        raise ValueError("infill_batch needs at least one request")
    if length < 0:
        raise ValueError(f"length must be >= 0, got {length}")
    return denoise_packed(engine, pack_rows(engine, requests, length), length, config)


def denoise_packed(engine: Engine, packed: PackedBatch, length: int,
                   config: Optional[DecodeConfig] = None) -> Iterator[DenoiseState]:
    """Run the engine's denoise loop on a packed batch (callers that need `truncated` pack first)."""
    if length == 0:
        return iter([engine._empty_state(packed.ids.shape[0])])
    return engine._denoise(packed.ids, packed.hole_start, length, config or DecodeConfig(), key_mask=packed.key_mask)
