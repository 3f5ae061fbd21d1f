"""Where a model runs and in which float dtype: the device and dtype settings, resolved (torch only).

On a CPU, 'auto' is not decided here but measured at load (`coda_model.kernels`)."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch sees no CUDA GPU: use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs (on a CPU 'auto' is measured instead: `coda_model.kernels`). Never fp16 on CPU."""
    if dtype == "auto":
        if device.type == "cpu":
            raise ValueError("dtype 'auto' on a CPU is chosen by measurement (coda_model.kernels.choose_kernel)")
        return torch.bfloat16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    out = DTYPES[dtype]
    if out == torch.float16 and device.type == "cpu":
        raise ValueError("float16 on CPU is ~1000x slower than bfloat16: use --dtype bfloat16 or float32")
    return out
