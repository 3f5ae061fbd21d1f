"""Optimizers and learning-rate schedules of the paper's stages.

- Pre-/mid-training: Adafactor exactly as CoDA's TPU trainer builds it (`transformers`' Adafactor with
  `relative_step=False, scale_parameter=False`, other arguments default: no first moment, update
  clipping 1.0; spec 4.5) with a linear schedule. Without `transformers`, torch's own Adafactor is used
  (similar but not identical update rule) and a warning says so.
- SFT: AdamW with a cosine schedule and warm-up ratio 0.1.

Schedules are plain `LambdaLR`s (warm-up then linear / cosine decay to `min_lr_ratio`), so their state
is a step counter and resumes exactly.
"""

from __future__ import annotations

import math
import warnings

import torch

from coda_train.config import OptimConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, foreach=False)
    try:
        from transformers.optimization import Adafactor  # noqa: PLC0415 - optional, matches the paper
    except ImportError:
        warnings.warn("transformers is not installed: using torch.optim.Adafactor, which differs from the "
                      "paper's (HF) Adafactor in details", stacklevel=2)
        return torch.optim.Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay, foreach=False)
    return Adafactor(params, lr=cfg.lr, relative_step=False, scale_parameter=False, warmup_init=False,
                     weight_decay=cfg.weight_decay)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Multiplier of the peak LR at optimizer step `step` (0-based, as LambdaLR counts)."""
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    floor = cfg.min_lr_ratio

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
