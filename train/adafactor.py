"""Adafactor with exactly the update CoDA's TPU trainer used, and correct under FSDP2 sharding.

CoDA built `transformers.optimization.Adafactor(lr, relative_step=False, scale_parameter=False)` (spec
4.5): no first moment, factored second moment for matrices (row and column means of g^2 + 1e-30),
decay beta2_t = 1 - t^-0.8, update clipped to RMS <= 1, then times lr. `transformers`' class does not
run on FSDP2's sharded DTensor parameters (it mixes plain and distributed tensors), and its factored
statistics need reductions across the shards anyway. This version works on each rank's local rows and
all-reduces the few cross-row quantities (column means, the mean of the row statistic, the update RMS),
so N ranks compute the same update as one process. State tensors are DTensors shaped like the full
statistics, so `torch.distributed.checkpoint` gathers them like any other optimizer state.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor import zeros as dtensor_zeros
except ImportError:  # pragma: no cover - very old torch
    DTensor = None


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if DTensor is not None and isinstance(t, DTensor) else t


class Adafactor(torch.optim.Optimizer):
    """HF Adafactor(relative_step=False, scale_parameter=False, beta1=None, warmup_init=False)."""

    def __init__(self, params, lr: float, eps: tuple[float, float] = (1e-30, 1e-3), clip_threshold: float = 1.0,
                 decay_rate: float = -0.8, weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate,
                                      weight_decay=weight_decay))

    def _init_state(self, p: torch.Tensor, state: dict) -> None:
        state["step"] = torch.tensor(0.0)
        shape = p.shape
        factored = len(shape) >= 2
        if DTensor is not None and isinstance(p, DTensor):
            mesh = p.device_mesh
            if factored:
                row_place = [Shard(0)] if p.placements[0] == Shard(0) else [Replicate()]
                state["exp_avg_sq_row"] = dtensor_zeros(shape[:-1], device_mesh=mesh, placements=row_place)
                state["exp_avg_sq_col"] = dtensor_zeros(shape[:-2] + shape[-1:], device_mesh=mesh,
                                                        placements=[Replicate()])
            else:
                state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
        elif factored:
            state["exp_avg_sq_row"] = torch.zeros(shape[:-1], dtype=torch.float32, device=p.device)
            state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:], dtype=torch.float32, device=p.device)
        else:
            state["exp_avg_sq"] = torch.zeros(shape, dtype=torch.float32, device=p.device)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self._init_state(p, state)
                self._update(p, state, group)
        return loss

    def _update(self, p: torch.Tensor, state: dict, group: dict) -> None:
        pg = None
        sharded = DTensor is not None and isinstance(p, DTensor) and any(pl.is_shard() for pl in p.placements)
        if sharded:
            pg = p.device_mesh.get_group()

        def all_sum(t: torch.Tensor) -> torch.Tensor:
            if sharded:
                dist.all_reduce(t, group=pg)
            return t

        grad = _local(p.grad).float()
        data = _local(p)
        p32 = data.float()
        state["step"] += 1
        lr = group["lr"]
        beta2t = 1.0 - math.pow(float(state["step"]), group["decay_rate"])
        update = grad.square() + group["eps"][0]
        if "exp_avg_sq_row" in state:
            rows_total = p.shape[-2]
            row, col = _local(state["exp_avg_sq_row"]), _local(state["exp_avg_sq_col"])
            row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
            col_mean = all_sum(update.sum(dim=-2)) / rows_total
            col.mul_(beta2t).add_(col_mean, alpha=1.0 - beta2t)
            row_mean = all_sum(row.sum(dim=-1, keepdim=True)) / rows_total
            update = (row / row_mean).rsqrt().unsqueeze(-1) * col.unsqueeze(-2).rsqrt()
            update.mul_(grad)
        else:
            sq = _local(state["exp_avg_sq"])
            sq.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
            update = sq.rsqrt().mul_(grad)
        rms = torch.sqrt(all_sum(update.square().sum()) / p.numel())
        update.div_((rms / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if group["weight_decay"] != 0:
            p32.add_(p32, alpha=-group["weight_decay"] * lr)
        p32.add_(-update)
        data.copy_(p32)
