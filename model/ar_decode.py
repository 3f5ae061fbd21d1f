"""Greedy left-to-right decoding with a KV cache: the autoregressive baseline diffusion is measured against.

`CodaLM(causal=True)` runs CoDA's weights as an AR model; this is the one copy of its cached greedy
loop (the engine benchmark's AR latency row and the recipe's AR+FIM comparison both use it). Like the
engine's context caches, `ARCache` preallocates its buffers once per request, so a step writes only its
own key/value instead of concatenating (and copying) the whole history every token.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch

from coda_model.network import CodaLM, KeyValue


class ARCache:
    """Per-layer K/V buffers [B, H_kv, max_len, head_dim], filled left to right."""

    def __init__(self, first: list[KeyValue], max_len: int) -> None:
        """Sized and typed after `first` (the prompt's K/V, which it then holds)."""
        b, h, _, d = first[0][0].shape
        shape = (len(first), b, h, max_len, d)
        self.keys = first[0][0].new_empty(shape)
        self.values = first[0][1].new_empty(shape)
        self.length = 0
        self.append(first)

    def append(self, kv: list[KeyValue]) -> None:
        s = kv[0][0].shape[2]
        if self.length + s > self.keys.shape[3]:
            raise ValueError(f"cache holds {self.keys.shape[3]} positions, asked to store {self.length + s}")
        for layer, (k, v) in enumerate(kv):
            self.keys[layer, :, :, self.length:self.length + s].copy_(k)
            self.values[layer, :, :, self.length:self.length + s].copy_(v)
        self.length += s

    def past(self) -> list[KeyValue]:
        """Views of the filled part, as `CodaLM.forward(past_key_values=...)` takes them."""
        n = self.length
        return [(self.keys[i, :, :, :n], self.values[i, :, :, :n]) for i in range(self.keys.shape[0])]


@torch.inference_mode()
def greedy_decode(model: CodaLM, prompt: Sequence[int], max_new_tokens: int) -> Iterator[int]:
    """Yield up to `max_new_tokens` greedy continuations of `prompt`, one causal forward each.

    Lazy on purpose: the forward for a token runs when it is asked for, so a caller that stops at an
    end token pays for no extra forward and can time the prefill (the first token) on its own.
    """
    if not prompt or max_new_tokens < 1:
        return
    dev = next(model.parameters()).device
    x = torch.tensor([list(prompt)], device=dev)
    out = model(x, causal=True, use_cache=True, logits_index=torch.tensor([len(prompt) - 1], device=dev))
    cache = ARCache(out.key_values, len(prompt) + max_new_tokens - 1)
    for i in range(max_new_tokens):
        nxt = int(out.logits[0, -1].argmax())
        yield nxt
        if i + 1 < max_new_tokens:
            out = model(torch.tensor([[nxt]], device=dev), causal=True, past_key_values=cache.past(), use_cache=True)
            cache.append(out.key_values)
