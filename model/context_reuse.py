"""Context K/V that lives across requests, and partial K/V refreshes inside one request.

Why: with the dual cache a step costs the hole, but every *refresh* (one per block, and one at the
start of every request) costs the whole context. At CoDA-1.7B a 512-token refresh is seconds on a
CPU, while a keystroke changes one token. llama.cpp's `--cache-reuse` keeps an AR server's K/V and
recomputes only from the first changed token; this module does the same for the bidirectional model:

- `SequenceKV`: per-layer keys/values of *every* position of the sequence being decoded. A partial
  refresh recomputes a span [a, b) with the rest as `past_key_values` and writes it back; the
  prefix / dual caches are filled from it.
- `ContextEntry`: what one request leaves behind (ids at its start, hole masked, and their K/V).
- `plan_reuse`: from the old and new ids, the span to recompute: everything from the first changed
  token up to the last changed one (and at least the first block's window). The identical head is
  reused as is; the identical tail is reused with its keys re-rotated by the length change
  (`rotate_keys`: RoPE is a rotation, so R(p + d) = R(d) R(p); llama.cpp's K-shift does the same).
  In a bidirectional model the reused K/V attended to the old text: an approximation, bounded by
  `ReusePolicy` (a full refresh after N reuses, after M changed tokens, or when the hole moves far).
- `ContextStore`: LRU of entries by a caller's key (a document URI for the language server; this
  module knows nothing of documents), bounded in entries and bytes. An entry that does not match
  the model (id, layers, heads, dtype, device, or its own ids) is dropped, never served.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import torch

from coda_model.network import apply_rope, rope_tables

KeyValue = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class ReusePolicy:
    """When a stored context may be reused instead of a full refresh."""

    max_reuses: int = 8             # consecutive warm requests before a full refresh
    max_changed_tokens: int = 256   # tokens recomputed (summed over those requests) before a full refresh
    max_hole_shift: int = 64        # the hole moved by more tokens than this: full refresh

    def __post_init__(self) -> None:
        for name in ("max_reuses", "max_changed_tokens", "max_hole_shift"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")


@dataclass
class ContextEntry:
    """One request's sequence at its start (hole masked) and the K/V of every position, batch 1."""

    ids: tuple[int, ...]
    keys: torch.Tensor       # [layers, kv_heads, N, head_dim], RoPE applied
    values: torch.Tensor     # [layers, kv_heads, N, head_dim]
    model_id: str
    hole_start: int
    reuses: int = 0          # warm requests since the last full refresh
    changed: int = 0         # tokens recomputed since the last full refresh

    @property
    def nbytes(self) -> int:
        return self.keys.numel() * self.keys.element_size() + self.values.numel() * self.values.element_size()

    def matches(self, model_id: str, shape: tuple[int, int, int], dtype: torch.dtype, device: torch.device) -> bool:
        """Same model, layout, dtype and device, and K/V for exactly its ids (else it must not be served)."""
        layers, heads, head_dim = shape
        want = (layers, heads, len(self.ids), head_dim)
        return (self.model_id == model_id and tuple(self.keys.shape) == want and tuple(self.values.shape) == want
                and self.keys.dtype == dtype == self.values.dtype
                and self.keys.device == device == self.values.device)


@dataclass(frozen=True)
class ReusePlan:
    """Recompute new positions [start, end); reuse old [0, start) and old [old_tail, N_old) shifted by `shift`."""

    start: int
    end: int
    old_tail: int
    shift: int
    changed: int


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def plan_reuse(entry: ContextEntry, new_ids: Sequence[int], hole_start: int, window: tuple[int, int],
               policy: ReusePolicy) -> Optional[ReusePlan]:
    """The span to recompute for `new_ids` from `entry`, or None when a full refresh is due.

    `window` must be recomputed whatever changed (the first block's positions and the one before).
    """
    old = entry.ids
    if abs(hole_start - entry.hole_start) > policy.max_hole_shift or entry.reuses >= policy.max_reuses:
        return None
    head = _common_prefix(old, new_ids)
    if head == len(old) == len(new_ids):   # the same sequence again: only the first window is recomputed
        return ReusePlan(window[0], window[1], window[1], 0, 0)
    room = min(len(old), len(new_ids)) - head
    tail = min(_common_prefix(old[::-1], list(new_ids)[::-1]), room)
    changed = len(new_ids) - tail - head
    if entry.changed + changed > policy.max_changed_tokens:
        return None
    start, end = min(head, window[0]), max(len(new_ids) - tail, window[1])
    if start == 0 and end == len(new_ids):
        return None   # nothing to reuse
    return ReusePlan(start, end, len(old) - (len(new_ids) - end), len(new_ids) - len(old), changed)


def rotate_keys(keys: torch.Tensor, shift: int, theta: float) -> torch.Tensor:
    """Keys rotated by RoPE at position p -> the same keys at p + shift (computed in fp32). keys: [..., N, hd]."""
    if shift == 0 or keys.shape[-2] == 0:
        return keys
    head_dim = keys.shape[-1]
    pos = torch.full((1, 1), shift, dtype=torch.long, device=keys.device)
    cos, sin = rope_tables(pos, head_dim, theta, torch.float32)   # [1, 1, 1, hd]
    return apply_rope(keys.float(), cos[0, 0], sin[0, 0]).to(keys.dtype)


class SequenceKV:
    """Keys and values of every position of the sequence being decoded: [layers, B, H, N, hd] each."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        self.keys, self.values = keys, values

    @classmethod
    def from_layers(cls, kv: list[KeyValue]) -> "SequenceKV":
        return cls(torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv]))

    @classmethod
    def from_entry(cls, entry: ContextEntry, plan: ReusePlan, seq_len: int, batch: int, theta: float) -> "SequenceKV":
        """The new sequence's K/V with the reused head and (re-rotated) tail filled; [start, end) is left zero."""
        layers, heads, _, hd = entry.keys.shape
        shape = (layers, batch, heads, seq_len, hd)
        keys = entry.keys.new_zeros(shape)
        values = entry.values.new_zeros(shape)
        a, b = plan.start, plan.end
        keys[:, :, :, :a] = entry.keys[:, None, :, :a]
        values[:, :, :, :a] = entry.values[:, None, :, :a]
        keys[:, :, :, b:] = rotate_keys(entry.keys[:, :, plan.old_tail:], plan.shift, theta)[:, None]
        values[:, :, :, b:] = entry.values[:, None, :, plan.old_tail:]
        return cls(keys, values)

    @property
    def length(self) -> int:
        return self.keys.shape[3]

    def layers(self) -> list[KeyValue]:
        return [(self.keys[i], self.values[i]) for i in range(self.keys.shape[0])]

    def context(self, start: int, end: int) -> list[KeyValue]:
        """Per layer, the K/V of every position outside [start, end) (what a span forward attends to besides itself)."""
        def cut(t: torch.Tensor) -> torch.Tensor:
            return torch.cat((t[:, :, :start], t[:, :, end:]), dim=2)
        return [(cut(self.keys[i]), cut(self.values[i])) for i in range(self.keys.shape[0])]

    def write(self, start: int, kv: list[KeyValue]) -> None:
        """Store a span forward's per-layer K/V at positions [start, start + its length)."""
        n = kv[0][0].shape[2]
        for i, (k, v) in enumerate(kv):
            self.keys[i, :, :, start:start + n] = k
            self.values[i, :, :, start:start + n] = v

    def entry(self, ids: Sequence[int], model_id: str, hole_start: int, reuses: int, changed: int) -> ContextEntry:
        """A copy of row 0 (every row holds the same context at a request's start) for the store."""
        return ContextEntry(tuple(int(i) for i in ids), self.keys[:, 0].clone(), self.values[:, 0].clone(),
                            model_id, hole_start, reuses, changed)


class ContextStore:
    """LRU of `ContextEntry` by the caller's key, bounded by entry count and bytes (the newest entry is
    always kept, alone, even when it is larger than `max_bytes`: it is the one the next request reuses).
    Thread-safe: the decode thread reads and writes it while a server thread may drop a closed document."""

    def __init__(self, max_entries: int = 8, max_bytes: int = 1 << 30, policy: ReusePolicy = ReusePolicy()) -> None:
        if max_entries < 1 or max_bytes < 0:
            raise ValueError(f"max_entries must be >= 1 and max_bytes >= 0, got {max_entries}, {max_bytes}")
        self.max_entries, self.max_bytes, self.policy = max_entries, max_bytes, policy
        self._entries: OrderedDict[Hashable, ContextEntry] = OrderedDict()
        self._lock = threading.Lock()
        self.dropped = 0   # entries refused as mismatched (for tests and the benchmark)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._entries

    def size_bytes(self) -> int:
        with self._lock:
            return sum(e.nbytes for e in self._entries.values())

    def get(self, key: Hashable) -> Optional[ContextEntry]:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def take_valid(self, key: Hashable, model_id: str, shape: tuple[int, int, int], dtype: torch.dtype,
                   device: torch.device) -> Optional[ContextEntry]:
        """The entry for `key` if it matches the model; a mismatched one is dropped and None returned."""
        entry = self.get(key)
        if entry is not None and not entry.matches(model_id, shape, dtype, device):
            self.drop(key)
            self.dropped += 1
            return None
        return entry

    def put(self, key: Hashable, entry: ContextEntry) -> None:
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = entry
            total = sum(e.nbytes for e in self._entries.values())
            while len(self._entries) > 1 and (len(self._entries) > self.max_entries or total > self.max_bytes):
                total -= self._entries.popitem(last=False)[1].nbytes

    def drop(self, key: Hashable) -> None:
        with self._lock:
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


@dataclass(frozen=True)
class ContextSlot:
    """Where a request reads and leaves its context: a store and the caller's key in it."""

    store: ContextStore
    key: Hashable
