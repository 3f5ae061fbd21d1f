"""Rows of training data in a deterministic, resumable order.

Plain text is packed the way CoDA packs it: documents (each ending with eos) are concatenated and cut
into `seq_len` rows; the remainder is dropped. SFT shards give one row per example, right-padded with
the pad token to `seq_len` (examples that do not fit are dropped, as CoDA's code does, or truncated).

The order is a seeded permutation per epoch, so the whole data position is one integer
(`rows_consumed`): that is what checkpoints store, and why resuming is bit-exact. Every rank computes
the same global batch order and takes its own rows of it, so a run on N processes sees the same global
batches as a run on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from coda_train.data import DataError, TokenStore


@dataclass
class Batch:
    tokens: torch.Tensor  # [B, L] int64 clean ids
    segment_ids: Optional[torch.Tensor]  # [B, L] document index within the row (packing = segments)
    src_mask: Optional[torch.Tensor]  # [B, L] bool, True = prompt (SFT: never masked)
    epoch: int  # epoch of the first row (curriculum index)


class RowSource:
    """Maps a global row number (over all epochs) to its tokens."""

    def __init__(self, store: TokenStore, seq_len: int, *, seed: int, shuffle: bool = True,
                 sft_policy: str = "drop", pad_id: Optional[int] = None, epoch_rows: int = 0) -> None:
        self.store, self.seq_len, self.seed, self.shuffle = store, seq_len, seed, shuffle
        self.sft = store.kind == "sft"
        self.pad_id = store.pad_id if pad_id is None else pad_id
        if self.sft:
            lengths = store.doc_ends - store.doc_starts
            keep = lengths <= seq_len if sft_policy == "drop" else lengths > 0
            self.docs = np.nonzero(keep)[0]
            self.num_rows = len(self.docs)
            if self.num_rows == 0:
                raise DataError(f"no SFT example fits in data.seq_len={seq_len}: raise seq_len or set "
                                "data.sft_max_len_policy = \"truncate\"")
        else:
            self.num_rows = store.num_tokens // seq_len
            if self.num_rows == 0:
                raise DataError(f"the data holds {store.num_tokens} tokens, fewer than one row of data.seq_len={seq_len}")
        self.total_rows = self.num_rows
        if epoch_rows:
            self.num_rows = min(epoch_rows, self.total_rows)
        self._perm_epoch, self._perm = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            if self.shuffle:
                self._perm = np.random.default_rng([self.seed, epoch]).permutation(self.total_rows)[:self.num_rows]
            else:
                self._perm = (np.arange(self.num_rows) + epoch * self.num_rows) % self.total_rows
            self._perm_epoch = epoch
        return self._perm

    def row(self, global_row: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        """-> (tokens [L], segment ids [L], src mask [L], epoch)."""
        epoch, i = divmod(global_row, self.num_rows)
        r = int(self._order(epoch)[i])
        L = self.seq_len
        if self.sft:
            d = int(self.docs[r])
            start, end = int(self.store.doc_starts[d]), int(self.store.doc_ends[d])
            ids = self.store.slice(start, min(end, start + L))
            tokens = np.full(L, self.pad_id, dtype=np.int64)
            tokens[:ids.size] = ids
            src = np.zeros(L, dtype=bool)
            src[:min(int(self.store.prompt_lens[d]), L)] = True
            return tokens, np.zeros(L, dtype=np.int64), src, epoch
        tokens = self.store.slice(r * L, (r + 1) * L)
        seg = self.store.segment_ids(r * L, (r + 1) * L)
        return tokens, seg - seg[0], np.zeros(L, dtype=bool), epoch

    def batch(self, first_row: int, num_rows: int, device: torch.device | str = "cpu") -> Batch:
        rows = [self.row(first_row + k) for k in range(num_rows)]
        tokens = torch.from_numpy(np.stack([r[0] for r in rows])).to(device)
        seg = torch.from_numpy(np.stack([r[1] for r in rows])).to(device)
        src = torch.from_numpy(np.stack([r[2] for r in rows])).to(device)
        return Batch(tokens=tokens, segment_ids=seg, src_mask=src if self.sft else None, epoch=rows[0][3])

    def epoch_of(self, rows_consumed: int) -> int:
        return rows_consumed // self.num_rows
