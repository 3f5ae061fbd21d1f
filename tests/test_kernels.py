"""CPU kernels chosen by measurement (`coda_model.kernels`), the int8 kernel (`coda_model.int8`) and
quantized directories (`coda_model.quantized`, `coda-lsp quantize`), on real model directories."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coda_model import default_model_path
from coda_model.checkpoint import WeightReader, load_model, read_config
from coda_model.errors import ModelLoadError
from coda_model.int8 import Int8Linear, int8_kernel_available, quantize_rows
from coda_model import kernels
from coda_model.kernels import KernelCache, Measurement, candidates, choose_kernel, int8_isa_note, pick_threads
from coda_model.quantized import QuantizedMismatch, write_quantized

pytestmark = pytest.mark.skipif(not int8_kernel_available(), reason="this torch build has no oneDNN int8 linear")
REPO = Path(__file__).resolve().parents[1]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().float() - b.detach().float()).norm() / b.detach().float().norm())


def test_int8_linear_is_within_quantization_error_of_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 512, bias=True)
    q = Int8Linear.from_linear(lin)
    for rows in (1, 9, 130):
        x = torch.randn(2, rows, 256)
        assert _rel(q(x), lin(x)) < 0.02          # per-channel weights, per-token activations: ~1%
    x = torch.randn(3, 256, dtype=torch.bfloat16)
    assert q(x).dtype == torch.bfloat16


def test_quantize_rows_round_trips_each_row_to_its_own_scale():
    w = torch.tensor([[1.0, -0.5, 0.25], [100.0, 0.0, -100.0]])
    q, scale = quantize_rows(w, 127)
    assert q.dtype == torch.int8 and q.abs().max() == 127
    assert quantize_rows(w, 63)[0].abs().max() == 63      # the 7-bit rows a CPU without VNNI gets
    assert torch.allclose(q.float() * scale[:, None], w, rtol=0.01, atol=0.005)


def test_int8_model_loads_tensor_by_tensor_and_stays_close_to_fp32(tiny_model_dir):
    ref = load_model(tiny_model_dir, device="cpu", dtype="float32", quantize="none", threads=1)
    q = load_model(tiny_model_dir, device="cpu", quantize="int8", threads=1)
    assert q.kernel.kernel.int8 and q.kernel_name == "int8"
    assert not any(isinstance(m, torch.nn.Linear) for m in q.model.modules())   # every Linear became int8
    ids = torch.randint(0, 5000, (1, 40))
    with torch.no_grad():
        h_ref = ref.model(ids, return_hidden=True).logits
        h_q = q.model(ids, return_hidden=True).logits
    assert _rel(h_q, h_ref) < 0.05


def test_explicit_settings_pin_the_kernel_and_say_so(tiny_model_dir):
    lm = load_model(tiny_model_dir, device="cpu", dtype="bfloat16", quantize="none", threads=1)
    assert lm.dtype == torch.bfloat16 and not lm.kernel.measured and "(set)" in lm.kernel.summary()
    assert candidates("bfloat16", "auto") == ["bfloat16"]           # an explicit dtype means float weights
    assert candidates("auto", "none") == [k for k in ("float32", "bfloat16") if kernels.meets_agreement_bar(k)]
    assert candidates("auto", "auto") == candidates("auto", "none") + ["int8"] * kernels.meets_agreement_bar("int8")
    assert candidates("bfloat16", "none") == ["bfloat16"] and candidates("auto", "int8") == ["int8"]
    with pytest.raises(ModelLoadError, match="float16"):
        candidates("float16", "auto")
    with pytest.raises(ModelLoadError, match="quantize"):
        candidates("auto", "int4")


def test_auto_measures_every_candidate_against_fp32_and_picks_the_cheapest(tiny_model_dir, tmp_path):
    lm = load_model(tiny_model_dir, device="cpu", dtype="auto", quantize="auto", kernel_cache=tmp_path / "k.json")
    names = [m.kernel for m in lm.kernel.measured]
    assert names == candidates("auto", "auto") and len(names) > 1
    assert all(m.ok and m.step_ms > 0 and m.refresh_ms > 0 for m in lm.kernel.measured)
    assert all(m.relative_error is not None for m in lm.kernel.measured if m.kernel != "float32")
    best = min(lm.kernel.measured, key=lambda m: m.request_ms)
    assert lm.kernel_name == best.kernel and "measured per request" in lm.kernel.reason
    assert lm.kernel.threads in lm.kernel.thread_ms and torch.get_num_threads() == lm.kernel.threads


def test_a_kernel_under_the_decode_agreement_bar_is_not_an_auto_candidate(monkeypatch):
    monkeypatch.setitem(kernels.AGREEMENT, "bfloat16", (0.95, 0.80))    # text match under 0.85
    monkeypatch.setitem(kernels.AGREEMENT, "int8", (0.95, 0.90))
    assert candidates("auto", "auto") == ["float32", "int8"]
    assert candidates("bfloat16", "none") == ["bfloat16"]                # set explicitly, it is used
    monkeypatch.setitem(kernels.AGREEMENT, "int8", (0.85, 0.90))         # token agreement under 0.9
    assert candidates("auto", "auto") == ["float32"] and candidates("auto", "int8") == ["int8"]


def test_a_kernel_that_errs_in_its_probe_is_not_chosen(tiny_model_dir, monkeypatch):
    import coda_model.int8 as int8_mod

    def wrong(w):   # a kernel that silently computes garbage (e.g. saturating int8 sums)
        q, scale = quantize_rows_real(w)
        return q, scale * 10
    quantize_rows_real = int8_mod.quantize_rows
    monkeypatch.setattr(int8_mod, "quantize_rows", wrong)
    lm = load_model(tiny_model_dir, device="cpu", quantize="int8")     # even when set, it is checked against fp32
    bad = next(m for m in lm.kernel.measured if m.kernel == "int8")
    assert not bad.ok and "differs from fp32" in bad.error and lm.kernel_name == "float32"
    assert any("int8 not used" in n for n in lm.kernel.notes)


def test_an_int8_kernel_that_fails_falls_back_to_fp32_with_one_line(tiny_model_dir, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("could not create a primitive descriptor for the matmul primitive")
    monkeypatch.setattr(Int8Linear, "set_weight", broken)
    lm = load_model(tiny_model_dir, device="cpu", quantize="int8")
    assert lm.kernel_name == "float32"
    assert any("int8 not used: RuntimeError: could not create" in n for n in lm.kernel.notes)
    assert "falling back to float32" in lm.kernel.summary()


def test_pick_threads_takes_the_fewest_within_ten_percent_of_the_fastest():
    assert pick_threads({1: 10.0, 2: 5.0, 4: 4.9}) == 2
    assert pick_threads({1: 10.0, 2: 9.5}) == 1          # 5% is not worth a second core
    assert pick_threads({1: 2.0, 2: 80.0}) == 1          # a busy core: one thread
    assert Measurement("x", 1.0, 10.0).request_ms == 10.0 + kernels.STEPS_PER_REQUEST * 1.0


def test_the_choice_is_cached_per_model_and_cpu_and_remeasured_elsewhere(tiny_model_dir, tmp_path):
    cache = tmp_path / "kernels.json"
    first = load_model(tiny_model_dir, device="cpu", quantize="auto", kernel_cache=cache)
    again = load_model(tiny_model_dir, device="cpu", quantize="auto", kernel_cache=cache)
    assert not first.kernel.cached and again.kernel.cached and again.kernel_name == first.kernel_name
    data = json.loads(cache.read_text())
    (entry,) = data["entries"].values()
    entry["identity"]["cpu"] = "Some Other CPU"
    cache.write_text(json.dumps(data))
    other = load_model(tiny_model_dir, device="cpu", quantize="auto", kernel_cache=cache)
    assert not other.kernel.cached and any("another CPU" in n for n in other.kernel.notes)
    data = json.loads(cache.read_text())
    next(iter(data["entries"].values()))["identity"]["torch"] = "1.0.0"
    cache.write_text(json.dumps(data))
    older = load_model(tiny_model_dir, device="cpu", quantize="auto", kernel_cache=cache)
    assert not older.kernel.cached and any("torch 1.0.0" in n for n in older.kernel.notes)
    cache.write_text("{not json")
    broken = load_model(tiny_model_dir, device="cpu", quantize="auto", kernel_cache=cache)
    assert any("unreadable" in n for n in broken.kernel.notes)
    assert json.loads(cache.read_text())["version"] == kernels.CACHE_VERSION    # rewritten whole


def test_the_cache_is_keyed_by_the_weights(tiny_model_dir, tmp_path):
    family, config = read_config(tiny_model_dir)
    key = kernels.model_key(WeightReader(tiny_model_dir, family))
    copy = shutil.copytree(tiny_model_dir, tmp_path / "copy")
    data = json.loads((copy / "config.json").read_text())
    data["rope_theta"] = 10_000.0
    (copy / "config.json").write_text(json.dumps(data))
    assert kernels.model_key(WeightReader(copy, family)) != key


def test_int8_isa_note_names_what_onednn_may_use():
    assert int8_isa_note({"amx_int8", "avx512_vnni"}) == "AMX-INT8"
    assert int8_isa_note({"amx_int8", "avx512_vnni"}, "AVX512_CORE_VNNI").startswith("VNNI")
    assert int8_isa_note({"avx2"}).startswith("no VNNI")
    assert int8_isa_note({"amx_int8", "avx512_vnni"}, "AVX2").startswith("no VNNI")


def test_quantized_directory_loads_the_same_int8_weights_without_quantizing(tiny_model_dir, tmp_path, monkeypatch):
    dst = tmp_path / "int8"
    stats = write_quantized(tiny_model_dir, dst, max_shard_bytes=1 << 20)
    assert stats["shards"] > 1 and (dst / "model.safetensors.index.json").is_file()
    on_the_fly = load_model(tiny_model_dir, device="cpu", quantize="int8", threads=1)
    import coda_model.int8 as int8_mod
    calls = []
    real = int8_mod.quantize_rows
    monkeypatch.setattr(int8_mod, "quantize_rows", lambda w: calls.append(1) or real(w))
    stored = load_model(dst, device="cpu", quantize="int8", threads=1)
    assert stored.kernel_name == "int8"
    ids = torch.randint(0, 5000, (1, 30))
    with torch.no_grad():
        assert torch.equal(stored.model(ids).logits, on_the_fly.model(ids).logits)
    assert len(calls) == 9    # only the probe's one-layer slice (7 linears, embedding, head); the model loads as stored
    deq = load_model(dst, device="cpu", dtype="float32", quantize="none", threads=1)   # asked for floats
    assert deq.kernel_name == "float32" and any("dequantized" in n for n in deq.kernel.notes)


def test_a_quantized_directory_from_another_model_is_refused_and_the_server_falls_back(tiny_model_dir, tmp_path):
    from coda_lsp.loading import load_engine
    from coda_lsp.options import ServerOptions
    dst = tmp_path / "int8"
    write_quantized(tiny_model_dir, dst)
    data = json.loads((dst / "config.json").read_text())
    data["rope_theta"] = 10_000.0          # another model's config beside these int8 rows
    (dst / "config.json").write_text(json.dumps(data))
    with pytest.raises(QuantizedMismatch, match="made from another model"):
        load_model(dst, device="cpu")
    lm = load_engine(ServerOptions(model_path=str(dst), threads=1))
    assert lm.kernel == "float32" and lm.path == tiny_model_dir.resolve()
    assert "using its source" in lm.kernel_note and "made from another model" in lm.kernel_note
    data["quantization_config"]["source"] = str(tmp_path / "gone")
    (dst / "config.json").write_text(json.dumps(data))
    with pytest.raises(QuantizedMismatch):
        load_engine(ServerOptions(model_path=str(dst), threads=1))


def test_coda_lsp_quantize_writes_a_loadable_copy_and_refuses_bad_input(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    dst = tmp_path / "default-int8"
    ok = subprocess.run([sys.executable, "-m", "coda_lsp.cli", "quantize", str(default_model_path()), str(dst)],
                        capture_output=True, text=True, env=env, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "wrote" in ok.stdout and (dst / "tokenizer.json").is_file()
    out = subprocess.run([sys.executable, "-m", "coda_lsp.cli", "complete", str(REPO / "examples" / "fib.py") + ":4:9",
                          "--model", str(dst), "--min-confidence", "0", "--threads", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode in (0, 1) and "int8" in out.stderr, out.stderr
    again = subprocess.run([sys.executable, "-m", "coda_lsp.cli", "quantize", str(dst), str(tmp_path / "x")],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 2 and "already quantized" in again.stderr and len(again.stderr.strip().splitlines()) == 1
    missing = subprocess.run([sys.executable, "-m", "coda_lsp.cli", "quantize", str(tmp_path / "nope"), str(tmp_path / "y")],
                             capture_output=True, text=True, env=env, timeout=300)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_without_vnni_int8_still_agrees_and_the_status_says_so(tiny_model_dir):
    """oneDNN capped at AVX2 stands in for a laptop CPU without VNNI."""
    code = ("from coda_model.checkpoint import load_model; import sys; "
            f"lm = load_model({str(tiny_model_dir)!r}, device='cpu', quantize='int8', threads=1); "
            "print(lm.kernel_name); print(lm.kernel.summary())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "PYTHONWARNINGS": "ignore"})
    assert out.returncode == 0, out.stderr
    name, summary = out.stdout.strip().splitlines()[-2:]
    assert "no VNNI" in summary
    assert name == "int8" or "falling back to float32" in summary   # either it agrees, or fp32 with one line
