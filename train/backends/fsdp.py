"""FSDP2 (`torch.distributed.fsdp.fully_shard`) under torchrun: GPUs with NCCL, or CPUs with gloo (tests).

Each decoder layer is its own FSDP unit (all-gathered just before it runs, freed after), the rest of the
model is the root unit. With `run.precision = "bf16"` parameters are gathered and computed in bf16 while
gradients are reduced in fp32 (`MixedPrecisionPolicy`); `model.gradient_checkpointing` recomputes each
layer in backward.

    torchrun --nproc-per-node 8 -m coda_train.cli pretrain --config configs/coda_1p7b_pretrain_gpu.toml
    torchrun --nproc-per-node 2 -m coda_train.cli pretrain --config configs/tiny_pretrain.toml --set run.device=cpu

FSDP averages gradients over ranks; the trainer's loss is a sum over the global batch divided by a
global normaliser, so `grad_scale` multiplies the local loss by the world size to undo the average.
Checkpoints are gathered to full (unsharded) state dicts, so a run can resume on a different number of
processes, and the files are the same as a single-process run's.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, set_model_state_dict

from coda_train.backends.base import Backend
from coda_train.config import RunConfig


class FSDPBackend(Backend):
    name = "fsdp"

    def __init__(self, run: RunConfig) -> None:
        super().__init__(run)
        if "RANK" not in os.environ and not dist.is_initialized():
            raise ValueError("run.backend = fsdp needs torchrun: torchrun --nproc-per-node N -m coda_train.cli ...")
        use_cuda = torch.cuda.is_available() and run.device in ("auto", "cuda")
        if not dist.is_initialized():
            dist.init_process_group("nccl" if use_cuda else "gloo")
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if use_cuda:
            local = int(os.environ.get("LOCAL_RANK", "0"))
            torch.cuda.set_device(local)
            self.device = torch.device("cuda", local)
        else:
            self.device = torch.device("cpu")

    def wrap(self, model: nn.Module) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh  # noqa: PLC0415
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # noqa: PLC0415

        mesh = init_device_mesh(self.device.type, (self.world,))
        mp = MixedPrecisionPolicy()
        if self.run.precision == "bf16":
            mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        model.to(self.device)
        for layer in model.model.layers:
            fully_shard(layer, mesh=mesh, mp_policy=mp)
        fully_shard(model, mesh=mesh, mp_policy=mp)
        return model

    def grad_scale(self) -> float:
        return float(self.world)

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t)
        return t

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        params = [p for p in model.parameters() if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()
