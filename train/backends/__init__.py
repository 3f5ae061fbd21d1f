"""Execution back-ends: one process (CPU/GPU), FSDP2 under torchrun (GPU, or CPU with gloo), torch_xla (TPU).

All expose the same small interface (`Backend`) so the trainer's step function is identical on each.
"""

from __future__ import annotations

import os

from coda_train.backends.base import Backend
from coda_train.config import ConfigError, RunConfig


def make_backend(run: RunConfig) -> Backend:
    """Pick the back-end: `run.backend`, or auto = fsdp under torchrun (WORLD_SIZE set), xla for device xla."""
    kind = run.backend
    if kind == "auto":
        if run.device == "xla":
            kind = "xla"
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            kind = "fsdp"
        else:
            kind = "single"
    try:
        if kind == "single":
            from coda_train.backends.single import SingleBackend  # noqa: PLC0415

            return SingleBackend(run)
        if kind == "fsdp":
            from coda_train.backends.fsdp import FSDPBackend  # noqa: PLC0415

            return FSDPBackend(run)
        from coda_train.backends.xla import XLABackend  # noqa: PLC0415

        return XLABackend(run)
    except ValueError as exc:  # device / launcher problems: one line naming the setting
        raise ConfigError(f"run.backend / run.device: {exc}") from exc
