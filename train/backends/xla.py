"""torch_xla SPMD back-end (TPU), as CoDA's pre-/mid-training ran: one program over a 1-D FSDP mesh.

The trainer's step function is unchanged: under SPMD there is one logical process holding global
tensors, and sharding annotations tell XLA how to split them. Parameters follow CoDA's 1-D FSDP plan
(`qwen-fsdp-1d.yaml`, spec 4.6): embeddings, q/o/gate/up projections, norms and the LM head sharded on
dim 0; k/v/down projections on dim 1. Optimizer state is annotated like its parameter (Adafactor's row
and column statistics like the matching dim) after every step and after a resume loads it from the
host: left alone, loaded state would sit whole on every device (AdamW's two fp32 moments of 1.7B
parameters: 13.6 GB per chip) and the plan would rest on sharding propagation. Input rows are sharded
on the batch dim.

One optimizer step (all micro-batches of gradient accumulation, clipping, the optimizer, the LR
schedule) is traced lazily and cut into one XLA graph by `mark_step`; nothing reads a device value
before that (`clip_grad_norm` returns the norm as a tensor, read after the step). Shapes are static:
the trainer refuses `objective.logits = "masked"` here (its number of logits per row depends on the
noise), so after warm-up no step compiles; `step_metrics` reports XLA's compile and execution counts
into `metrics.jsonl` to show it. Python scalars (LR, Adafactor's beta2_t) enter as device data, not
constants, except 0 and +-1, which is why the first steps of a warm-up compile their own graphs.

Launch on a TPU v4 pod slice (every host runs the same command; see configs/coda_1p7b_pretrain_tpu.toml):

    gcloud compute tpus tpu-vm ssh $TPU_NAME --zone $ZONE --worker=all --command \\
      "cd coda-lsp && PJRT_DEVICE=TPU XLA_USE_SPMD=1 .venv/bin/coda-train pretrain \\
       --config configs/coda_1p7b_pretrain_tpu.toml"

(`pip install torch_xla[tpu]` matching the torch version, on every host, first.) The same program runs
on XLA's CPU devices, which is how it is tested here (`bash scripts/test_xla.sh`):

    PJRT_DEVICE=CPU CPU_NUM_DEVICES=4 .venv-xla/bin/coda-train pretrain --config configs/tiny_pretrain.toml \\
      --set run.backend=xla --set run.device=xla --set objective.logits=full
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from coda_train.backends.base import Backend
from coda_train.config import RunConfig

DIM1 = ("k_proj", "v_proj", "down_proj")  # sharded on their input dim (spec 4.6)
AXIS = "fsdp"
Spec = tuple[Optional[str], ...]


def param_spec(name: str, p: torch.Tensor) -> Spec:
    """CoDA's 1-D FSDP plan for one parameter."""
    if p.dim() == 1:
        return (AXIS,)
    if any(k in name for k in DIM1):
        return (None, AXIS) + (None,) * (p.dim() - 2)
    return (AXIS,) + (None,) * (p.dim() - 1)


def state_spec(spec: Spec, param_shape: torch.Size, state_shape: torch.Size) -> Optional[Spec]:
    """Spec of an optimizer state tensor from its parameter's: same shape -> same spec; Adafactor's row
    statistic (shape[:-1]) and column statistic (shape[:-2] + shape[-1:]) take the matching dims."""
    if state_shape == param_shape:
        return spec
    if len(param_shape) >= 2 and state_shape == param_shape[:-1]:
        return spec[:-1]
    if len(param_shape) >= 2 and state_shape == param_shape[:-2] + param_shape[-1:]:
        return spec[:-2] + spec[-1:]
    return None


def remat_layers(model: nn.Module) -> None:
    """`model.gradient_checkpointing` under XLA: each decoder layer through torch_xla's checkpoint.
    torch.utils.checkpoint fails here (it looks up a `torch.xla` device module), and torch_xla's version
    puts optimization barriers around the recomputation so XLA's common-subexpression pass cannot fold
    it back into the forward (CoDA's remat did the same). The layer's `forward` is replaced on the
    instance, so parameter names, and with them checkpoints, stay as they are."""
    from torch_xla.utils.checkpoint import checkpoint  # noqa: PLC0415

    for layer in model.model.layers:
        def remat(*args, _forward=layer.forward):
            return checkpoint(_forward, *args)

        layer.forward = remat
    model.gradient_checkpointing = False  # the network's own (torch.utils) checkpoint stays off


class XLABackend(Backend):
    name = "xla"
    static_shapes = True

    def __init__(self, run: RunConfig) -> None:
        super().__init__(run)
        try:
            import numpy as np  # noqa: PLC0415
            import torch_xla  # noqa: PLC0415
            import torch_xla.debug.metrics as met  # noqa: PLC0415
            import torch_xla.distributed.spmd as xs  # noqa: PLC0415
            import torch_xla.runtime as xr  # noqa: PLC0415
        except ImportError as exc:
            raise ValueError("run.backend = xla needs torch_xla (pip install 'torch_xla[tpu]' matching your torch; "
                             "on CPUs bash scripts/xla_env.sh); on GPUs use torchrun with run.backend = fsdp") from exc
        if not xr.is_spmd():  # once per process (a second Trainer in the same process reuses it)
            xr.use_spmd()
        self.torch_xla, self.xs, self.met = torch_xla, xs, met
        self._num_devices = xr.global_runtime_device_count()
        self._process_index = xr.process_index()  # a TPU host; every host runs the same program as rank 0
        self.mesh = xs.Mesh(np.arange(self._num_devices), (self._num_devices,), (AXIS,))
        self.device = torch_xla.device()
        self._specs: dict[nn.Parameter, Spec] = {}

    @property
    def num_devices(self) -> int:
        return self._num_devices

    @property
    def is_main(self) -> bool:
        """Host 0 of a pod writes the files (every host computes the same global values)."""
        return self._process_index == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        model.to(self.device)  # new Parameter objects on the XLA device: the trainer builds the optimizer after
        for name, p in model.named_parameters():
            spec = param_spec(name, p)
            self.xs.mark_sharding(p, self.mesh, spec)
            self._specs[p] = spec
        if getattr(model, "gradient_checkpointing", False):
            remat_layers(model)
        return model

    def to_device(self, t: torch.Tensor) -> torch.Tensor:
        """Rows on the fsdp axis (per-device batch 1 at CoDA's scale)."""
        t = t.to(self.device)
        self.xs.mark_sharding(t, self.mesh, (AXIS,) + (None,) * (t.dim() - 1))
        return t

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        """The norm as a device tensor: reading it here would cut the step into two XLA graphs."""
        params = [p for p in model.parameters() if p.grad is not None]
        return torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))

    def optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        optimizer.step()
        self._shard_optimizer_state(optimizer)

    def _shard_optimizer_state(self, optimizer: torch.optim.Optimizer) -> None:
        for p, state in optimizer.state.items():
            spec = self._specs.get(p)
            if spec is None:
                continue
            for value in state.values():
                if isinstance(value, torch.Tensor) and value.device.type == "xla":
                    s = state_spec(spec, p.shape, value.shape)
                    if s is not None:
                        self.xs.mark_sharding(value, self.mesh, s)

    def mark_step(self) -> None:
        self.torch_xla.sync()

    def step_metrics(self) -> dict:
        """Cumulative XLA graph compilations and executions in this process (torch_xla.debug.metrics).
        Host reads of a sharded tensor (the loss, a checkpoint) compile and run a small gather program of
        their own, once per shape and sharding."""
        def samples(name: str) -> int:
            data = self.met.metric_data(name)
            return int(data[0]) if data else 0

        return {"xla_compiles": samples("CompileTime"),
                "xla_executions": samples("ExecuteReplicatedTime") + samples("ExecuteTime")}

    def model_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """`.cpu()` of a sharded tensor gathers the global value."""
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}

    def load_model_state_dict(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(state[k].to(v.dtype).to(self.device))

    def optim_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The layout of `Backend.optim_state_dict` (state and param groups keyed by parameter name), so an
        XLA checkpoint resumes on the CPU back-end and the other way round."""
        names = {p: n for n, p in model.named_parameters()}
        state = {names[p]: {k: v.detach().cpu() if isinstance(v, torch.Tensor) else v for k, v in s.items()}
                 for p, s in optimizer.state.items()}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [names[p] for p in g["params"]]}
                  for g in optimizer.param_groups]
        return {"state": state, "param_groups": groups}

    def load_optim_state_dict(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        names = {n: p for n, p in model.named_parameters()}
        index = {}
        for g in optimizer.param_groups:
            for p in g["params"]:
                index[p] = len(index)
        by_name = {n: index[p] for n, p in names.items() if p in index}
        groups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [by_name[n] for n in g["params"]]}
                  for g in state["param_groups"]]
        optimizer.load_state_dict({"state": {by_name[n]: s for n, s in state["state"].items()}, "param_groups": groups})
        self._shard_optimizer_state(optimizer)
