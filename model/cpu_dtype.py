"""`dtype: auto` on a CPU: bf16 only where the CPU multiplies bf16 matrices in hardware, and measured faster.

Why: without bf16 matrix units (AMX; most laptops, AVX2-only CPUs) oneDNN converts bf16 to fp32 around
every matmul, so bf16 is *slower* than fp32 (measured here on a 2-core AVX2 AMD EPYC: a 512-token forward
of the shipped default model took 3.58 s in bf16 vs 0.65 s in fp32; the issue measured a 1.7B refresh at
7.3 s bf16 vs 4.7 s fp32 with AMX masked off). With AMX, bf16 halves the bytes read per step.

The decision is `choose_cpu_dtype(flags, isa, probe)`: the CPU's flags (`/proc/cpuinfo`, or torch's own
AMX check), the `ONEDNN_MAX_CPU_ISA` limit (e.g. AVX512_CORE keeps oneDNN off AMX, standing in for a
laptop), and a short matmul probe; tests inject all three.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Optional

import torch

Probe = Callable[[torch.dtype], float]


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; elsewhere what torch reports)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    flags = set()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if amx is not None and amx():
        flags |= {"amx_tile", "amx_bf16"}
    return flags


def bf16_matrix_units(flags: set[str], isa: Optional[str]) -> bool:
    """AMX bf16 present and oneDNN allowed to use it (ONEDNN_MAX_CPU_ISA unset, ALL, or an AMX level)."""
    if "amx_bf16" not in flags:
        return False
    return isa is None or isa.strip().upper() in ("", "ALL", "DEFAULT") or "AMX" in isa.upper()


def probe_matmul(dtype: torch.dtype, size: int = 256, tokens: int = 64, repeats: int = 5) -> float:
    """Seconds of a [tokens, size] x [size, 4*size] linear in `dtype` (best of `repeats`): a forward in miniature."""
    x = torch.randn(tokens, size).to(dtype)
    w = torch.randn(4 * size, size).to(dtype)
    torch.nn.functional.linear(x, w)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.nn.functional.linear(x, w)
        best = min(best, time.perf_counter() - t0)
    return best


def choose_cpu_dtype(flags: Optional[set[str]] = None, isa: Optional[str] = None,
                     probe: Optional[Probe] = None) -> torch.dtype:
    """bf16 when the CPU has bf16 matrix units that oneDNN may use and the probe finds bf16 faster; else fp32."""
    flags = cpu_flags() if flags is None else flags
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA") if isa is None else isa
    if not bf16_matrix_units(flags, isa):
        return torch.float32
    probe = probe or probe_matmul
    return torch.bfloat16 if probe(torch.bfloat16) < probe(torch.float32) else torch.float32
