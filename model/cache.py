"""Approximate context KV caches for block-wise diffusion decoding (Fast-dLLM prefix / dual cache).

In a bidirectional model every position's keys/values depend on every token, so once hole tokens
change, cached context K/V are stale. Fast-dLLM's observation is that they change little between
adjacent steps, so they are computed once per block (a full forward that is also a decode step) and
reused for that block's remaining steps; the next block refreshes them.

The sequence is split into a *window* [w0, w1) that is recomputed every step (the active block plus
one position before it, whose output predicts the block's first token under CoDA's logit shift) and
its *context*, whose K/V come from the cache:
- `PrefixCache`: context = [0, w0); the input is everything from w0 to the end (block + later hole
  + suffix), so a step costs the tail of the sequence.
- `DualCache`: context = [0, w0) and [w1, N); the input is only the window, so a step costs the hole,
  not the file.
Both hold one preallocated buffer per layer for keys and for values, made once per request size;
`update` copies the context part of a full forward's K/V into it, `past` returns views of the filled
part in the order `CodaLM.forward` expects (`past_key_values`: keys the input attends to in addition
to itself; order is irrelevant to bidirectional attention, RoPE is already applied).
"""

from __future__ import annotations

from typing import Optional

import torch

from coda_model.decode_config import CACHE_KINDS

KeyValue = tuple[torch.Tensor, torch.Tensor]  # each [B, H_kv, S, head_dim]


class _ContextCache:
    """Per-layer K/V buffers [B, H_kv, max_len, head_dim] plus how much of them is filled."""

    def __init__(self, num_layers: int, batch: int, num_kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (num_layers, batch, num_kv_heads, max_len, head_dim)
        self.keys = torch.zeros(shape, dtype=dtype, device=device)
        self.values = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0
        self.window: tuple[int, int] = (0, 0)
        self.key_mask: Optional[torch.Tensor] = None  # [B, context + window] padding mask, or None

    def reset(self) -> None:
        self.length, self.window, self.key_mask = 0, (0, 0), None

    def past(self) -> list[KeyValue]:
        n = self.length
        return [(self.keys[i, :, :, :n], self.values[i, :, :, :n]) for i in range(self.keys.shape[0])]

    def _fill(self, pieces: list[list[KeyValue]]) -> None:
        """Write the concatenation of per-layer K/V pieces (each [B, H, s, hd]) into the buffers."""
        n = sum(p[0][0].shape[2] for p in pieces)
        if n > self.keys.shape[3]:
            raise ValueError(f"cache holds {self.keys.shape[3]} positions, asked to store {n}")
        for layer in range(self.keys.shape[0]):
            at = 0
            for piece in pieces:
                k, v = piece[layer]
                s = k.shape[2]
                self.keys[layer, :, :, at:at + s].copy_(k)
                self.values[layer, :, :, at:at + s].copy_(v)
                at += s
        self.length = n


def _slice(kv: list[KeyValue], start: int, end: int) -> list[KeyValue]:
    return [(k[:, :, start:end], v[:, :, start:end]) for k, v in kv]


class PrefixCache(_ContextCache):
    """Context = positions [0, w0) of the sequence; the model input is [w0, N)."""

    def update(self, full_kv: list[KeyValue], window: tuple[int, int],
               attention_mask: Optional[torch.Tensor] = None) -> None:
        """full_kv: per-layer K/V of the whole sequence (a refresh forward); window: (w0, w1)."""
        w0, _ = window
        self._fill([_slice(full_kv, 0, w0)])
        self.window = window
        self.key_mask = attention_mask  # prefix then input = the sequence's own order

    def input_span(self, seq_len: int) -> tuple[int, int]:
        return self.window[0], seq_len


class DualCache(_ContextCache):
    """Context = [0, w0) and [w1, N); the model input is the window [w0, w1) only."""

    def update(self, full_kv: list[KeyValue], window: tuple[int, int],
               attention_mask: Optional[torch.Tensor] = None) -> None:
        w0, w1 = window
        seq_len = full_kv[0][0].shape[2]
        self._fill([_slice(full_kv, 0, w0), _slice(full_kv, w1, seq_len)])
        self.window = window
        if attention_mask is not None:  # keys arrive as [prefix, suffix, window]
            attention_mask = torch.cat((attention_mask[:, :w0], attention_mask[:, w1:], attention_mask[:, w0:w1]), 1)
        self.key_mask = attention_mask

    def input_span(self, seq_len: int) -> tuple[int, int]:
        return self.window


def make_cache(kind: str, num_layers: int, batch: int, num_kv_heads: int, seq_len: int, head_dim: int,
               dtype: torch.dtype, device: torch.device) -> Optional[_ContextCache]:
    """'none' -> None (exact mode), 'prefix' -> PrefixCache, 'dual' -> DualCache, sized for seq_len."""
    if kind == "none":
        return None
    cls = {"prefix": PrefixCache, "dual": DualCache}.get(kind)
    if cls is None:
        raise ValueError(f"unknown cache {kind!r}: use one of {', '.join(CACHE_KINDS)}")
    return cls(num_layers, batch, num_kv_heads, seq_len, head_dim, dtype, device)
