"""One CoDA 1.7B decoder layer: OpenVINO (fp32 / nncf int8 / bf16) against torch eager (issue 28).

Not part of CI. Run with the OpenVINO venv:

    nice -n 10 /work/ext/venv-ov/bin/python benchmarks/openvino_step.py \
        [--src ~/.cache/coda-lsp/coda-1p7b-random-bf16] [--threads 1 2] [--runs 5]

The layer is the server's window step: pre-norm attention with q/k RMSNorm before RoPE, GQA 16/8
heads, head_dim 128, bidirectional attention over cached context K/V (inputs) plus its own K/V,
then a SwiGLU MLP, with layer 0's real weights (bf16 -> fp32). Outputs: hidden, own K, own V.
Shapes: window step M=9 over S=512 cached tokens; refresh M=512 with S=0 (no past inputs).
Candidates: torch fp32 / bf16 / int8 (oneDNN qlinear, per-channel int8 weights, per-token uint8
activations), OpenVINO fp32, bf16 hint, nncf INT8_ASYM / INT8_SYM weights. Median of --runs after
warm-up, per thread count; relative error of the hidden output vs torch fp32.
Writes benchmarks/results/realsize_openvino.json.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import time
from pathlib import Path

# benchmarks/http.py would shadow the stdlib's http (torch imports it): drop this folder from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch
import torch.nn.functional as F
from torch import nn

CACHE = Path.home() / ".cache" / "coda-lsp"
OUT_JSON = Path(__file__).resolve().parent / "results" / "realsize_openvino.json"
QMAX = 127.0


class RMSNorm(nn.Module):
    def __init__(self, w: torch.Tensor, eps: float):
        super().__init__()
        self.weight, self.eps = nn.Parameter(w, requires_grad=False), eps

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class Layer(nn.Module):
    """Stateless decoder layer. forward(h [1,M,D], cos/sin [1,M,hd], past_k/v [1,kv,S,hd] or None)."""

    def __init__(self, sd: dict, cfg: dict):
        super().__init__()
        self.nh, self.nkv, self.hd = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_dim"]
        eps = cfg["rms_norm_eps"]

        def lin(name):
            m = nn.Linear(sd[name].shape[1], sd[name].shape[0], bias=False)
            m.weight = nn.Parameter(sd[name], requires_grad=False)
            return m
        a, m = "self_attn.", "mlp."
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (lin(a + n + "_proj.weight") for n in "qkvo")
        self.gate_proj, self.up_proj, self.down_proj = (lin(m + n + "_proj.weight") for n in ("gate", "up", "down"))
        self.q_norm, self.k_norm = RMSNorm(sd[a + "q_norm.weight"], eps), RMSNorm(sd[a + "k_norm.weight"], eps)
        self.ln1, self.ln2 = (RMSNorm(sd[n + "_layernorm.weight"], eps) for n in ("input", "post_attention"))

    def forward(self, h, cos, sin, past_k=None, past_v=None):
        b, m, _ = h.shape
        x = self.ln1(h)
        q = self.q_norm(self.q_proj(x).view(b, m, self.nh, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, m, self.nkv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(b, m, self.nkv, self.hd).transpose(1, 2)
        c, s = cos.unsqueeze(1), sin.unsqueeze(1)
        q, k = q * c + rotate_half(q) * s, k * c + rotate_half(k) * s
        kk, vv = (k, v) if past_k is None else (torch.cat([past_k, k], 2), torch.cat([past_v, v], 2))
        rep = self.nh // self.nkv
        kk = kk.unsqueeze(2).expand(b, self.nkv, rep, kk.shape[2], self.hd).reshape(b, self.nh, -1, self.hd)
        vv = vv.unsqueeze(2).expand(b, self.nkv, rep, vv.shape[2], self.hd).reshape(b, self.nh, -1, self.hd)
        att = F.scaled_dot_product_attention(q, kk, vv)          # bidirectional: no mask
        h = h + self.o_proj(att.transpose(1, 2).reshape(b, m, self.nh * self.hd))
        x = self.ln2(h)
        h = h + self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        return h, k, v


class Int8Linear(nn.Module):
    """The project's int8 kernel, standalone: oneDNN qlinear on prepacked per-channel int8 weights."""

    def __init__(self, lin: nn.Linear):
        super().__init__()
        w = lin.weight.detach().float()
        scale = w.abs().amax(1).clamp_min(1e-12) / QMAX
        q = torch.round(w / scale[:, None]).clamp_(-127, 127).to(torch.int8)
        self.n = w.shape[0]
        self.packed = torch.ops.onednn.qlinear_prepack(q.contiguous(), None)
        self.scale, self.zero = scale.contiguous(), torch.zeros(self.n, dtype=torch.int64)

    def forward(self, x):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        xs = x2.abs().amax(1, keepdim=True).float().clamp_min_(1e-12).div_(QMAX)
        xq = torch.round(x2.float() / xs).add_(128).clamp_(0, 255).to(torch.uint8)
        y = torch.ops.onednn.qlinear_pointwise(xq, 1.0, 128, self.packed, self.scale, self.zero,
                                               None, 1.0, 0, torch.float32, "none", [], "")
        return y.mul_(xs).view(*shape[:-1], self.n)


def load_layer0(src: Path) -> tuple[dict, dict, torch.Tensor]:
    from safetensors import safe_open
    cfg = json.loads((src / "config.json").read_text())
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    pre, sd = "model.layers.0.", {}
    for name, f in index.items():
        if name.startswith(pre):
            with safe_open(str(src / f), framework="pt") as fh:
                sd[name[len(pre):]] = fh.get_tensor(name).float()
    with safe_open(str(src / index["model.embed_tokens.weight"]), framework="pt") as fh:   # real rows as input
        ids = torch.randint(0, 151000, (1024,), generator=torch.Generator().manual_seed(0))
        emb = fh.get_tensor("model.embed_tokens.weight")[ids].float()
    return sd, cfg, emb


def rope(cfg: dict, start: int, m: int):
    hd = cfg["head_dim"]
    inv = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    f = torch.arange(start, start + m, dtype=torch.float64)[:, None] * inv[None]
    e = torch.cat([f, f], -1)
    return e.cos().float()[None], e.sin().float()[None]


def timed(fn, runs: int, warm: int) -> list[float]:
    out = []
    for i in range(warm + runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out[warm:]


def machine() -> dict:
    info: dict = {"cpu": "?", "flags": {}, "cores": os.cpu_count()}
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            info["cpu"] = line.split(":", 1)[1].strip()
        if line.startswith("flags"):
            fl = set(line.split(":", 1)[1].split())
            info["flags"] = {f: f in fl for f in
                             ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_int8", "amx_bf16")}
            break
    return info


OV_CANDS = {"ov_fp32": (None, "f32"), "ov_int8_asym": ("INT8_ASYM", "f32"), "ov_int8_sym": ("INT8_SYM", "f32"),
            "ov_bf16": (None, "bf16"), "ov_int8_asym_bf16": ("INT8_ASYM", "bf16"), "ov_int8_sym_bf16": ("INT8_SYM", "bf16")}
SHAPES = {"window_M9_S512": (9, 512), "refresh_M512_S0": (512, 0)}


def setup(src: Path):
    """Layer 0 (fp32), and per shape: the inputs (seeded) and torch fp32's hidden output."""
    sd, cfg, emb = load_layer0(src)
    layer = Layer(sd, cfg).eval()
    g = torch.Generator().manual_seed(1)
    cases = {}
    for sname, (m, s) in SHAPES.items():
        cos, sin = rope(cfg, s, m)
        inputs = [emb[:m][None].contiguous(), cos, sin]
        if s:
            inputs += [torch.randn(1, cfg["num_key_value_heads"], s, cfg["head_dim"], generator=g) for _ in range(2)]
        with torch.inference_mode():
            cases[sname] = (inputs, layer(*inputs)[0], 2 if m < 100 else 1)
    return layer, cfg, cases


def ov_child(a, cname: str) -> None:
    """One OpenVINO candidate, all shapes and thread counts; prints ROW lines (a crash keeps earlier rows)."""
    import nncf
    import openvino as ov
    layer, _, cases = setup(a.src)
    core, (mode, prec) = ov.Core(), OV_CANDS[cname]
    for sname, (inputs, ref, warm) in cases.items():
        model = ov.convert_model(layer, example_input=tuple(inputs))
        if mode:
            model = nncf.compress_weights(model, mode=getattr(nncf.CompressWeightsMode, mode))
        feeds = [x.numpy() for x in inputs]
        for t in a.threads:
            print(f"START {sname} t={t}, compile_model", flush=True)
            cm = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": t, "INFERENCE_PRECISION_HINT": prec,
                                                   "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
            req = cm.create_infer_request()
            print(f"START {sname} t={t}, first infer", flush=True)
            y = torch.from_numpy(req.infer(feeds)[cm.output(0)].copy())
            ms = timed(lambda: req.infer(feeds), a.runs, warm)
            print("ROW " + json.dumps(row(sname, cname, t, ms, y, ref)), flush=True)


def run_child(a, cname: str, rows: list, errors: list) -> None:
    import subprocess
    cmd = [sys.executable, __file__, "--src", str(a.src), "--runs", str(a.runs), "--threads", *map(str, a.threads),
           "--ov-child", cname]
    p, last = subprocess.run(cmd, capture_output=True, text=True), None
    for line in p.stdout.splitlines():
        if line.startswith("ROW "):
            rows.append(json.loads(line[4:]))
            print(rows[-1], flush=True)
        elif line.startswith("START "):
            last = line[6:]
    if p.returncode:
        why = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
        errors.append(f"{cname}: OpenVINO run {why} at {last}; stderr: {p.stderr.strip()[-400:]}")
        print("FAILED", errors[-1], flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=CACHE / "coda-1p7b-random-bf16")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    ap.add_argument("--ov-child", help=argparse.SUPPRESS)   # internal: one OpenVINO candidate
    a = ap.parse_args()
    if a.ov_child:
        return ov_child(a, a.ov_child) or 0
    import nncf
    import openvino as ov
    res: dict = {"what": "one CoDA 1.7B decoder layer (layer 0 weights), stateless window step, ms per call",
                 "machine": machine(), "loadavg_before": os.getloadavg(), "versions": {
                     "openvino": ov.__version__, "nncf": nncf.__version__, "torch": torch.__version__},
                 "timing": f"median of {a.runs} runs after warm-up; rel_err = ||y - y_fp32|| / ||y_fp32|| on hidden out",
                 "ov_cpu_caps": list(ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))}
    layer, cfg, cases = setup(a.src)
    layer_bf16, layer_i8 = copy.deepcopy(layer).to(torch.bfloat16), copy.deepcopy(layer)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"):
        setattr(layer_i8, n, Int8Linear(getattr(layer, n)))
    rows, errors = [], []
    for sname, (inputs, ref, warm) in cases.items():
        tc = {"torch_fp32": (layer, inputs), "torch_bf16": (layer_bf16, [x.bfloat16() for x in inputs]),
              "torch_int8_onednn": (layer_i8, inputs)}
        for t in a.threads:
            torch.set_num_threads(t)
            for cname, (mod, inp) in tc.items():
                try:
                    with torch.inference_mode():
                        y = mod(*inp)[0]
                        ms = timed(lambda: mod(*inp), a.runs, warm)
                    rows.append(row(sname, cname, t, ms, y, ref))
                    print(rows[-1], flush=True)
                except Exception as e:  # noqa: BLE001
                    errors.append(f"{sname} {cname} t={t}: {e!r}")
                    print("FAILED", errors[-1], flush=True)
    del layer_bf16, layer_i8
    for cname, (_, prec) in OV_CANDS.items():   # each in its own process: the bf16 hint can crash the plugin
        if prec == "bf16" and "BF16" not in res["ov_cpu_caps"]:
            errors.append(f"{cname}: OpenVINO CPU plugin reports no BF16 capability, skipped")
        else:
            run_child(a, cname, rows, errors)
    res.update(table=rows, errors=errors, best_openvino_vs_best_torch=ratios(rows, SHAPES),
               loadavg_after=os.getloadavg())
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res["best_openvino_vs_best_torch"], indent=2))
    print(f"wrote {a.out}")
    return 0


def row(shape: str, cand: str, threads: int, ms: list[float], y: torch.Tensor, ref: torch.Tensor) -> dict:
    err = float((y.float() - ref).norm() / ref.norm())
    return {"shape": shape, "candidate": cand, "threads": threads, "median_ms": round(statistics.median(ms), 2),
            "min_ms": round(min(ms), 2), "runs_ms": [round(x, 2) for x in ms], "rel_err_vs_torch_fp32": round(err, 5)}


def ratios(rows: list[dict], shapes: dict) -> dict:
    """best torch median / best OpenVINO median (>1: OpenVINO faster), per shape, overall and per thread count."""
    out = {}
    for s in shapes:
        r = [x for x in rows if x["shape"] == s]
        entry = {}
        for label, sel in [("any_threads", r)] + [(f"threads_{t}", [x for x in r if x["threads"] == t])
                                                   for t in sorted({x["threads"] for x in r})]:
            tb = min((x for x in sel if x["candidate"].startswith("torch")), key=lambda x: x["median_ms"], default=None)
            ob = min((x for x in sel if x["candidate"].startswith("ov")), key=lambda x: x["median_ms"], default=None)
            if tb and ob:
                entry[label] = {"ratio": round(tb["median_ms"] / ob["median_ms"], 3),
                                "best_torch": f'{tb["candidate"]} t={tb["threads"]} {tb["median_ms"]} ms',
                                "best_openvino": f'{ob["candidate"]} t={ob["threads"]} {ob["median_ms"]} ms'}
        out[s] = entry
    out["meaning"] = "ratio = best torch step time / best OpenVINO step time; ship OpenVINO only if >= 1.5"
    return out


if __name__ == "__main__":
    sys.exit(main())
