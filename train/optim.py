"""Optimizers and learning-rate schedules of the paper's stages.

- Pre-/mid-training: Adafactor with the update of CoDA's TPU trainer (`transformers`' Adafactor with
  `relative_step=False, scale_parameter=False`: no first moment, update clipping 1.0; spec 4.5),
  re-implemented in `coda_train.adafactor` so it also runs on FSDP2 shards, with a linear schedule.
- SFT: AdamW with a cosine schedule and warm-up ratio 0.1.

Schedules are plain `LambdaLR`s (warm-up then linear / cosine decay to `min_lr_ratio`), so their state
is a step counter and resumes exactly. With `min_lr_ratio = 0` they equal `transformers`'
`get_linear_schedule_with_warmup` / `get_cosine_schedule_with_warmup` (what CoDA's trainers used).
"""

from __future__ import annotations

import math
import torch

from coda_train.adafactor import Adafactor
from coda_train.config import OptimConfig


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                 weight_decay=cfg.weight_decay, foreach=False)
    return Adafactor(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_lambda(cfg: OptimConfig, total_steps: int):
    """Multiplier of the peak LR at optimizer step `step` (0-based, as LambdaLR counts)."""
    warmup = cfg.warmup_steps or int(round(cfg.warmup_ratio * total_steps))
    floor = cfg.min_lr_ratio

    def fn(step: int) -> float:
        if warmup and step < warmup:
            return step / warmup  # as transformers' schedules: the first update has lr 0
        if cfg.schedule == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if cfg.schedule == "linear":
            return floor + (1.0 - floor) * (1.0 - progress)
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return fn


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps))
