"""int8 weights with int8 activations quantized per token at run time, for CPU inference.

Why: on a CPU a diffusion window step multiplies 9-32 rows at a time, where fp32 GEMM is compute-bound
and int8 dot products (VNNI, AMX-INT8) do 4x the work per instruction. oneDNN's u8s8 matmul
(`torch.ops.onednn.qlinear_pointwise`, the op inductor emits for x86 int8) is the fastest kernel
measured on this project's CPUs, ahead of `torch.ao.quantization.quantize_dynamic` (deprecated,
per-tensor activation scales) and torchao's int8 configs (eager `torch._int_mm`); see
docs/cpu-kernels.md for the table.

Scheme (what `quantize_rows` and `Int8Linear.forward` do):
- weights: symmetric per output channel, scale = max|w_row| / 127;
- activations: symmetric per token (row), scale = max|x_row| / 127, shifted by 128 into uint8 so
  the u8s8 kernel applies; the kernel returns sum_k x_q * w_q * w_scale, times the token's scale;
- the embedding is int8 per row as well (a gather then a scale); norms, RoPE and attention stay in
  the float dtype of the rest of the model.

`Int8Linear` holds the weight in oneDNN's prepacked layout, which depends on the CPU, so quantized
directories (`coda_model.quantized`) store the plain int8 rows and scales, packed at load.
"""

from __future__ import annotations

import os
from typing import Optional

import torch
from torch import nn

QMAX = 127           # weight levels with VNNI / AMX (exact int32 dot products)
QMAX_NO_VNNI = 63
_ZERO_POINT = torch.tensor(128.0)   # activations are shifted into uint8 for the u8s8 kernel    # without VNNI: AVX2's u8 x s8 pair sums saturate at int16 unless weights keep 7 bits


def int8_kernel_available() -> bool:
    """True when this torch build has oneDNN's quantized linear (x86 builds with mkldnn)."""
    onednn = getattr(torch.ops, "onednn", None)
    try:
        return onednn is not None and hasattr(onednn, "qlinear_pointwise") and hasattr(onednn, "qlinear_prepack")
    except RuntimeError:
        return False


def has_vnni() -> bool:
    """Whether oneDNN may use int8 dot products with int32 sums here (VNNI or AMX-INT8).

    Mirrors oneDNN's own reading of ONEDNN_MAX_CPU_ISA, which caps it below what the CPU has."""
    try:
        flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
    except OSError:
        flags = []
    if not {"avx512_vnni", "avx_vnni", "amx_int8"} & set(flags):
        return False
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper()
    return cap in ("", "ALL", "DEFAULT") or "VNNI" in cap or "AMX" in cap or cap.startswith("AVX10") or \
        cap == "AVX512_CORE_BF16"


def weight_qmax() -> int:
    """Weight levels for this CPU: 127 with VNNI, 63 without (see QMAX_NO_VNNI)."""
    return QMAX if has_vnni() else QMAX_NO_VNNI


def quantize_rows(w: torch.Tensor, qmax: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """w: [N, K] float -> (int8 [N, K], fp32 scale [N]) with w ~ q * scale[:, None] (symmetric per row).

    qmax: weight levels (default: this CPU's, `weight_qmax`)."""
    qmax = qmax or weight_qmax()
    scale = w.abs().amax(dim=1).float().clamp_min_(1e-12).div_(qmax)   # exact in bf16 too: a max rounds nothing
    q = w.to(torch.float32, copy=True).mul_(scale.reciprocal()[:, None]).round_().clamp_(-qmax, qmax).to(torch.int8)
    return q, scale


def dequantize_rows(q: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scale.float()[:, None]).to(dtype)


class Int8Linear(nn.Module):
    """y = x @ W.T (+ b) with W int8 per output channel and x quantized per token (oneDNN u8s8 GEMM).

    Built empty (on any device, meta included) with the float Linear's shape; `set_weight` fills it
    from int8 rows and scales (prepacked for this CPU). Output dtype = input dtype."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", torch.empty(out_features, in_features, dtype=torch.int8), persistent=False)
        self.register_buffer("weight_scale", torch.empty(out_features, dtype=torch.float32), persistent=False)
        self.register_buffer("weight_zero", torch.zeros(out_features, dtype=torch.int64), persistent=False)
        self.bias: Optional[nn.Parameter] = nn.Parameter(torch.empty(out_features)) if bias else None

    def set_weight(self, q: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor] = None) -> None:
        """q: int8 [N, K], scale: [N]. Prepacks q for this CPU (a copy; `q` can be freed afterwards)."""
        if tuple(q.shape) != (self.out_features, self.in_features) or q.dtype != torch.int8:
            raise ValueError(f"int8 weight of shape {list(q.shape)} ({q.dtype}) for a "
                             f"{self.in_features}->{self.out_features} linear")
        self.qweight = torch.ops.onednn.qlinear_prepack(q.contiguous(), None)
        self.weight_scale = scale.float().contiguous()
        self.weight_zero = torch.zeros(self.out_features, dtype=torch.int64)
        if self.bias is not None:
            if bias is None:
                raise ValueError("this linear has a bias but none was given")
            self.bias = nn.Parameter(bias.float(), requires_grad=False)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8Linear":
        out = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        q, scale = quantize_rows(linear.weight.detach())   # this CPU's weight levels
        out.set_weight(q, scale, None if linear.bias is None else linear.bias.detach())
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape                                       # x: [..., K]
        x2 = x.reshape(-1, self.in_features).float()
        lo, hi = torch.aminmax(x2, dim=1, keepdim=True)                    # one pass for the scale
        xs = torch.maximum(hi, lo.neg()).clamp_min_(1e-12).div_(QMAX)      # [M, 1]
        xq = torch.addcdiv(_ZERO_POINT, x2, xs).round_().clamp_(0, 255).to(torch.uint8)   # x / s + 128
        y = torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, self.qweight, self.weight_scale, self.weight_zero,
                                               None, 1.0, 0, x.dtype, "none", [], "")
        y = y.mul_(xs.to(x.dtype))
        if self.bias is not None:
            y = y.add_(self.bias.to(x.dtype))
        return y.view(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored int8 per row: a gather, then each row times its scale."""

    def __init__(self, num_embeddings: int, embedding_dim: int, dtype: torch.dtype = torch.float32) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim, self.dtype = num_embeddings, embedding_dim, dtype
        self.register_buffer("qweight", torch.empty(num_embeddings, embedding_dim, dtype=torch.int8), persistent=False)
        self.register_buffer("weight_scale", torch.empty(num_embeddings, dtype=torch.float32), persistent=False)

    def set_weight(self, q: torch.Tensor, scale: torch.Tensor) -> None:
        if tuple(q.shape) != (self.num_embeddings, self.embedding_dim) or q.dtype != torch.int8:
            raise ValueError(f"int8 embedding of shape {list(q.shape)} ({q.dtype}) for "
                             f"[{self.num_embeddings}, {self.embedding_dim}]")
        self.qweight, self.weight_scale = q.contiguous(), scale.float().contiguous()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        rows = self.qweight[ids].to(self.dtype)                # [..., D]
        return rows.mul_(self.weight_scale[ids].to(self.dtype)[..., None])


def int8_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(qualified name, module) of every Linear and Embedding that the int8 kernel replaces."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Embedding))]


def replace_with_int8(model: nn.Module, dtype: torch.dtype = torch.float32) -> list[str]:
    """Swap every Linear / Embedding of `model` for an empty int8 twin (to be filled by `set_weight`).

    Works on a meta-device model; returns the replaced modules' names. Tied weights are untied: each
    twin holds its own int8 copy."""
    names = []
    for name, module in int8_modules(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if isinstance(module, nn.Linear):
            twin: nn.Module = Int8Linear(module.in_features, module.out_features, bias=module.bias is not None)
        else:
            twin = Int8Embedding(module.num_embeddings, module.embedding_dim, dtype)
        setattr(parent, child, twin)
        names.append(name)
    return names


def weight_bytes(model: nn.Module) -> int:
    """Bytes of every parameter and buffer (int8 weights count 1 byte an element)."""
    seen, total = set(), 0
    for t in [*model.parameters(), *model.buffers()]:
        if id(t) in seen or t.device.type == "meta":   # id, not data_ptr: oneDNN's packed weights have no storage
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    return total
