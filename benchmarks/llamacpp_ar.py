"""llama.cpp AR generation on a Q8_0 GGUF of the random 1.7B CoDA weights (issue 28, "other engine" row).

Not part of CI or the test suite. Run with the llama-cpp-python venv:

    nice -n 10 /work/ext/venv-llama/bin/python benchmarks/llamacpp_ar.py \
        [--src ~/.cache/coda-lsp/coda-1p7b-random-bf16] [--threads 1 2] [--runs 2]

1. Writes (once, cached) ~/.cache/coda-lsp/coda-1p7b-random-q8_0.gguf for llama.cpp's `qwen3`
   architecture with the `gguf` package: hyperparameters, the gpt2/BPE tokenizer (pre "qwen2",
   token list padded to vocab_size with [PAD{i}]) and the same weights, Q8_0 (norms F32),
   converted tensor by tensor and row block by row block to keep RAM low.
2. Loads it with llama-cpp-python (n_ctx 1024, n_batch 512), evaluates the first 544 tokens of
   the stdlib `_pyio.py` and greedily generates 32 tokens, per thread count, best of N runs.
3. Writes benchmarks/results/realsize_llamacpp.json. A step that fails says why in "error".
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path

# benchmarks/http.py would shadow the stdlib's http (torch imports it): drop this folder from the path
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np

CACHE = Path.home() / ".cache" / "coda-lsp"
OUT_JSON = Path(__file__).resolve().parent / "results" / "realsize_llamacpp.json"
PROMPT_TOKENS, GEN_TOKENS = 544, 32


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


def rss_mb() -> dict:
    cur = 0.0
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            cur = int(line.split()[1]) / 1024
    return {"rss_mb": round(cur, 1), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def tensor_map(cfg: dict) -> list[tuple[str, str]]:
    """(HF name, llama.cpp name) in file order."""
    pairs = [("model.embed_tokens.weight", "token_embd.weight")]
    per = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
           "self_attn.o_proj": "attn_output", "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm",
           "input_layernorm": "attn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
           "mlp.down_proj": "ffn_down", "post_attention_layernorm": "ffn_norm"}
    for i in range(cfg["num_hidden_layers"]):
        pairs += [(f"model.layers.{i}.{hf}.weight", f"blk.{i}.{ll}.weight") for hf, ll in per.items()]
    pairs += [("model.norm.weight", "output_norm.weight"), ("lm_head.weight", "output.weight")]
    return pairs


def tokenizer(src: Path, vocab_size: int):
    import gguf
    vocab = json.loads((src / "vocab.json").read_text(encoding="utf-8"))
    added = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8")).get("added_tokens_decoder", {})
    rev = {i: t for t, i in vocab.items()}
    types: dict[int, int] = {}
    for sid, tok in added.items():
        i, content = int(sid), tok["content"]
        rev[i] = content
        looks_special = content.startswith("<|") and content.endswith("|>")
        types[i] = gguf.TokenType.CONTROL if (tok.get("special") or looks_special) else gguf.TokenType.USER_DEFINED
    tokens, toktypes = [], []
    for i in range(vocab_size):          # llama.cpp's converter pads the list the same way
        if i not in rev:
            tokens.append(f"[PAD{i}]")
            toktypes.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(rev[i])
            toktypes.append(types.get(i, gguf.TokenType.NORMAL))
    merges = [ln for ln in (src / "merges.txt").read_text(encoding="utf-8").splitlines()
              if ln.strip() and not ln.startswith("#version")]
    return tokens, toktypes, merges


class St:
    """Minimal safetensors reader: numpy memmaps, no torch (bf16 kept as uint16)."""

    def __init__(self, path: Path):
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            self.meta = json.loads(f.read(n))
        self.base = 8 + n
        self.mm = np.memmap(path, dtype=np.uint8, mode="r")

    def tensor(self, name: str) -> np.ndarray:
        m = self.meta[name]
        dt = {"BF16": np.uint16, "F16": np.float16, "F32": np.float32}[m["dtype"]]
        a, b = m["data_offsets"]
        return self.mm[self.base + a:self.base + b].view(dt).reshape(m["shape"])   # BF16: raw uint16


def bf16_to_f32(a: np.ndarray) -> np.ndarray:
    return (a.astype(np.uint32) << 16).view(np.float32) if a.dtype == np.uint16 else a.astype(np.float32)


def write_gguf(src: Path, dst: Path) -> dict:
    import gguf
    from gguf.quants import quantize
    cfg = json.loads((src / "config.json").read_text())
    index = json.loads((src / "model.safetensors.index.json").read_text())["weight_map"]
    Q8 = gguf.GGMLQuantizationType.Q8_0
    tmp = dst.with_suffix(".gguf.part")
    w = gguf.GGUFWriter(tmp, "qwen3")
    w.add_name("coda-1p7b-random")
    for fn, key in [("context_length", "max_position_embeddings"), ("embedding_length", "hidden_size"),
                    ("block_count", "num_hidden_layers"), ("feed_forward_length", "intermediate_size"),
                    ("head_count", "num_attention_heads"), ("head_count_kv", "num_key_value_heads"),
                    ("key_length", "head_dim"), ("value_length", "head_dim"), ("bos_token_id", "bos_token_id"),
                    ("eos_token_id", "eos_token_id"), ("pad_token_id", "pad_token_id")]:
        getattr(w, "add_" + fn)(cfg[key])
    w.add_rope_freq_base(float(cfg["rope_theta"]))
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    w.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0)
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, toktypes, merges = tokenizer(src, cfg["vocab_size"])
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types(toktypes)
    w.add_token_merges(merges)
    w.add_add_bos_token(False)

    files = {f: St(src / f) for f in set(index.values())}
    sl = lambda name: files[index[name]].tensor(name)  # noqa: E731
    plan = []
    for hf, ll in tensor_map(cfg):                 # pass 1: tensor infos only (shapes, types, byte sizes)
        shape = sl(hf).shape
        if len(shape) == 1:
            w.add_tensor_info(ll, shape, np.dtype(np.float32), shape[0] * 4)
            plan.append((hf, ll, None))
        else:
            rows, cols = shape
            bshape = (rows, cols // 32 * 34)
            w.add_tensor_info(ll, bshape, np.dtype(np.uint8), rows * bshape[1], raw_dtype=Q8)
            plan.append((hf, ll, Q8))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    fout = w.fout[0]
    t0 = time.perf_counter()
    for hf, ll, qt in plan:              # pass 2: tensor data, in blocks of rows
        s = sl(hf)
        ti = w.tensors[0].pop(ll)
        w.write_padding(fout, fout.tell())
        start = fout.tell()
        rows = s.shape[0]
        step = rows if qt is None else 8192
        for r in range(0, rows, step):
            block = bf16_to_f32(s[r:r + step])
            (block if qt is None else quantize(block, qt)).tofile(fout)
        assert fout.tell() - start == ti.nbytes, (ll, fout.tell() - start, ti.nbytes)
        w.write_padding(fout, ti.nbytes)
    w.close()
    tmp.replace(dst)
    return {"written": True, "convert_s": round(time.perf_counter() - t0, 1), **rss_mb()}


def bench(path: Path, threads: int, runs: int, extra_bufts: bool) -> dict:
    import llama_cpp
    import llama_cpp.llama_cpp as L
    if not extra_bufts:                  # no AMX / repack buffer types (see "amx_note" in the JSON)
        orig = L.llama_model_default_params

        def params():
            p = orig()
            p.use_extra_bufts = False
            return p
        L.llama_model_default_params = params
    t0 = time.perf_counter()
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_batch=512, n_threads=threads,
                          n_threads_batch=threads, verbose=False, logits_all=False)
    load_s = time.perf_counter() - t0
    import _pyio
    ids = llm.tokenize(Path(_pyio.__file__).read_bytes(), add_bos=False, special=False)[:PROMPT_TOKENS]
    n_vocab = llm.n_vocab()
    all_runs, generated = [], []
    for _ in range(runs):
        llm.reset()                      # clears the KV memory too
        t0 = time.perf_counter()
        llm.eval(ids)
        t1 = time.perf_counter()
        generated = []
        for _ in range(GEN_TOKENS):
            logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
            tok = int(np.argmax(logits))
            generated.append(tok)
            llm.eval([tok])
        t2 = time.perf_counter()
        r = {"prompt_eval_s": round(t1 - t0, 3), "generate_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3),
             "prompt_tok_per_s": round(len(ids) / (t1 - t0), 1), "gen_tok_per_s": round(GEN_TOKENS / (t2 - t1), 2)}
        all_runs.append(r)
    best = min(all_runs, key=lambda r: r["total_s"])
    return {"threads": threads, "use_extra_bufts": extra_bufts, "load_s": round(load_s, 2), "prompt_tokens": len(ids),
            "gen_tokens": GEN_TOKENS, "best": best, "runs": all_runs, "generated_head": generated[:8], **rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, default=CACHE / "coda-1p7b-random-bf16")
    ap.add_argument("--gguf", type=Path, default=CACHE / "coda-1p7b-random-q8_0.gguf")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", type=Path, default=OUT_JSON)
    ap.add_argument("--child", nargs=2, type=int, metavar=("THREADS", "EXTRA_BUFTS"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:                          # one measurement in its own process: a crash cannot take the report down
        print("RESULT " + json.dumps(bench(a.gguf, a.child[0], a.runs, bool(a.child[1]))), flush=True)
        return 0
    res: dict = {"what": "llama.cpp AR generation, Q8_0 GGUF of the random CoDA 1.7B weights (qwen3 arch)",
                 "setup": {"n_ctx": 1024, "n_batch": 512, "prompt": f"first {PROMPT_TOKENS} tokens of _pyio.py",
                           "generate": f"{GEN_TOKENS} tokens greedy", "timing": f"best of {a.runs} runs by total"},
                 "machine": machine(), "python": sys.version.split()[0], "loadavg_before": os.getloadavg(),
                 "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "(unset: libgomp spins)")}
    try:
        import llama_cpp
        res["llama_cpp_python"] = llama_cpp.__version__
        res["gguf_package"] = importlib.metadata.version("gguf")
        res["llama_system_info"] = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    except Exception as e:  # noqa: BLE001
        res["error"] = f"llama-cpp-python / gguf import failed: {e!r}"
        return finish(res, a.out)
    try:
        if a.gguf.exists():
            res["gguf"] = {"written": False, "cached": True}
        else:
            print(f"writing {a.gguf} ...", flush=True)
            res["gguf"] = write_gguf(a.src, a.gguf)
        res["gguf"].update({"path": str(a.gguf), "bytes": a.gguf.stat().st_size,
                            "gib": round(a.gguf.stat().st_size / 2**30, 3)})
        print("gguf:", res["gguf"], flush=True)
    except Exception as e:  # noqa: BLE001
        res["error"] = f"GGUF conversion failed: {e!r}"
        res["traceback"] = traceback.format_exc()
        return finish(res, a.out)
    res["results"] = []
    extra = 1                            # llama.cpp's default: AMX / repack extra buffer types on
    for t in a.threads:
        r = child(a, t, extra)
        if extra and r.get("returncode", 0) < 0:   # crashed on llama.cpp's default (AMX / repack) path
            res["default_path_failure"] = r
            res["amx_note"] = (f"llama.cpp's default load (use_extra_bufts=true: AMX_INT8 / repack buffers) died "
                               f"({r['error']}); on this machine gdb put the SIGSEGV in ggml_backend_amx_mul_mat at "
                               "the first decode (cf. open upstream ggml-org/llama.cpp#20824). The rows use "
                               "use_extra_bufts=false: ggml's plain CPU Q8_0 kernels (AVX-512 VNNI), no AMX.")
            print(res["amx_note"], flush=True)
            extra = 0
            r = child(a, t, extra)
        print(json.dumps(r), flush=True)
        res["results"].append(r)
    return finish(res, a.out)


def child(a, threads: int, extra: int) -> dict:
    import subprocess
    cmd = [sys.executable, __file__, "--gguf", str(a.gguf), "--runs", str(a.runs), "--child", str(threads), str(extra)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    for line in p.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    why = f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
    return {"threads": threads, "use_extra_bufts": bool(extra), "returncode": p.returncode,
            "error": f"llama.cpp run failed ({why})", "stderr_tail": p.stderr[-1500:]}


def finish(res: dict, out: Path) -> int:
    res["loadavg_after"] = os.getloadavg()
    res.update({"final_" + k: v for k, v in rss_mb().items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    if "error" in res:
        print("ERROR:", res["error"], file=sys.stderr)
    print(f"wrote {out}")
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
