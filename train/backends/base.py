"""The interface every back-end implements (single process is the reference implementation)."""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

from coda_train.config import RunConfig


class Backend:
    """Placement, sharding, collectives and state-dict gathering for one kind of run."""

    name = "single"
    rank = 0
    world = 1
    static_shapes = False  # True where a shape that changes per step recompiles the step (XLA)

    def __init__(self, run: RunConfig) -> None:
        self.run = run
        self.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints, metrics and logs."""
        return self.rank == 0

    @property
    def num_devices(self) -> int:
        """Accelerators the step runs on (MFU's denominator); one per rank except under SPMD."""
        return self.world

    def wrap(self, model: nn.Module) -> nn.Module:
        """Move / shard the model for training; returns the module to call."""
        return model.to(self.device)

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Place one micro-batch tensor (XLA also annotates its sharding)."""
        return t.to(self.device, non_blocking=True)

    def grad_scale(self) -> float:
        """Factor on the local loss so gradients come out as d(global loss)/dw after the back-end's reduction."""
        return 1.0

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        return t

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float | torch.Tensor:
        """Clip to `max_norm` (0 = off); the global norm before clipping (the trainer reads it after mark_step)."""
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return float(norm)

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()

    def mark_step(self) -> None:
        """End of a traced step (XLA); nothing elsewhere."""

    def step_metrics(self) -> dict:
        """Back-end counters logged with each metrics record (XLA: compilations, executions)."""
        return {}

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """Full (unsharded) CPU state dict; only meaningful on the main rank."""
        return {k: v.detach().to("cpu") for k, v in model.state_dict().items()}

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(state, strict=True)

    def optim_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """Optimizer state keyed by parameter name (not index), the same layout on every back-end, so a
        run can resume on another number of processes."""
        return get_optimizer_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_optim_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))

    def barrier(self) -> None:
        """Wait for all ranks."""

    def close(self) -> None:
        """Tear down process groups."""
