"""One process on CPU, one GPU or MPS: the reference back-end."""

from __future__ import annotations

import torch

from coda_model.checkpoint import resolve_device
from coda_train.backends.base import Backend
from coda_train.config import RunConfig


class SingleBackend(Backend):
    name = "single"

    def __init__(self, run: RunConfig) -> None:
        super().__init__(run)
        if run.device == "xla":
            raise ValueError("run.device = xla needs run.backend = xla (or auto)")
        self.device = resolve_device(run.device)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device.index or 0)
