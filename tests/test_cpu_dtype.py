"""`dtype: auto` on a CPU (`coda_model.cpu_dtype`): the choice from injected flags, oneDNN limits and timings."""

from __future__ import annotations

import torch

from coda_model.checkpoint import resolve_dtype
from coda_model.cpu_dtype import bf16_matrix_units, choose_cpu_dtype, cpu_flags, probe_matmul

AMX = {"avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
LAPTOP = {"avx2", "fma"}


def timings(bf16: float, fp32: float):
    calls = []

    def probe(dtype: torch.dtype) -> float:
        calls.append(dtype)
        return bf16 if dtype == torch.bfloat16 else fp32
    return probe, calls


def test_no_bf16_matrix_units_means_fp32_without_probing():
    probe, calls = timings(0.1, 1.0)
    assert choose_cpu_dtype(LAPTOP, None, probe) == torch.float32
    assert choose_cpu_dtype(LAPTOP | {"avx512_bf16"}, None, probe) == torch.float32   # no AMX tiles
    assert calls == []


def test_amx_picks_bf16_only_when_measured_faster():
    assert choose_cpu_dtype(AMX, None, timings(0.1, 0.3)[0]) == torch.bfloat16
    assert choose_cpu_dtype(AMX, None, timings(0.5, 0.3)[0]) == torch.float32


def test_onednn_kept_off_amx_is_the_laptop_case():
    assert not bf16_matrix_units(AMX, "AVX512_CORE")
    assert choose_cpu_dtype(AMX, "AVX512_CORE", timings(0.1, 0.3)[0]) == torch.float32
    assert bf16_matrix_units(AMX, "AVX512_CORE_AMX") and bf16_matrix_units(AMX, "ALL")


def test_this_machine_resolves_auto_consistently_with_its_flags():
    chosen = resolve_dtype("auto", torch.device("cpu"))
    if "amx_bf16" not in cpu_flags():
        assert chosen == torch.float32
    assert chosen in (torch.float32, torch.bfloat16)
    assert probe_matmul(torch.float32, size=32, tokens=4, repeats=1) > 0
