"""torch_xla SPMD back-end (TPU), as CoDA's pre-/mid-training ran: one program over a 1-D FSDP mesh.

The trainer's step function is unchanged: under SPMD there is one logical process holding global
tensors, and sharding annotations tell XLA how to split them. Parameters follow CoDA's 1-D FSDP plan
(`qwen-fsdp-1d.yaml`, spec 4.6): embeddings, q/o/gate/up projections, norms and the LM head sharded on
dim 0; k/v/down projections on dim 1. Input rows are sharded on the batch dim. Use `objective.logits =
"full"` (static shapes: no recompilation per step) and `model.gradient_checkpointing = true` at 1.7B.

Launch on a TPU v4 pod slice (every host runs the same command; see configs/coda_1p7b_pretrain_tpu.toml):

    gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=all --command \\
      "cd coda-lsp && PJRT_DEVICE=TPU XLA_USE_SPMD=1 .venv/bin/coda-train pretrain \\
       --config configs/coda_1p7b_pretrain_tpu.toml"

(`pip install torch_xla[tpu]` matching the torch version, on every host, first.) Not exercised here: this
machine has no TPU; the import is guarded and everything else is shared with the tested back-ends.
"""

from __future__ import annotations

import torch
from torch import nn

from coda_train.backends.base import Backend
from coda_train.config import RunConfig

DIM1 = ("k_proj", "v_proj", "down_proj")


class XLABackend(Backend):
    name = "xla"

    def __init__(self, run: RunConfig) -> None:
        super().__init__(run)
        try:
            import numpy as np  # noqa: PLC0415
            import torch_xla.core.xla_model as xm  # noqa: PLC0415
            import torch_xla.distributed.spmd as xs  # noqa: PLC0415
            import torch_xla.runtime as xr  # noqa: PLC0415
        except ImportError as exc:
            raise ValueError("run.backend = xla needs torch_xla (pip install 'torch_xla[tpu]' matching your torch); "
                             "on GPUs use torchrun with run.backend = fsdp") from exc
        xr.use_spmd()
        self.xm, self.xs = xm, xs
        n = xr.global_runtime_device_count()
        self.mesh = xs.Mesh(np.arange(n), (n,), ("fsdp",))
        self.device = xm.xla_device()

    def wrap(self, model: nn.Module) -> nn.Module:
        model.to(self.device)
        for name, p in model.named_parameters():
            if p.dim() == 1:
                self.xs.mark_sharding(p, self.mesh, ("fsdp",))
            elif any(k in name for k in DIM1):
                self.xs.mark_sharding(p, self.mesh, (None, "fsdp"))
            else:
                self.xs.mark_sharding(p, self.mesh, ("fsdp", None))
        return model

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Rows on the fsdp axis (per-device batch 1 at CoDA's scale)."""
        t = t.to(self.device)
        self.xs.mark_sharding(t, self.mesh, ("fsdp",) + (None,) * (t.dim() - 1))
        return t

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> float:
        """Clip without reading the norm back: a host read would split the step into two XLA graphs."""
        if max_norm > 0:
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], max_norm)
        return float("nan")

    def mark_step(self) -> None:
        self.xm.mark_step()

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
