"""Which kernel multiplies the model's matrices on this CPU, and with how many threads: measured, never guessed.

Why: CPUs of one laptop class differ several-fold. On a 2-core AVX2 EPYC bf16 was slower than fp32;
on a 2-core Sapphire Rapids with AMX, bf16 is ~8x and int8 (oneDNN u8s8) ~15x faster than fp32 for a
9-row window step (docs/cpu-kernels.md). A flag table cannot know that, so at load each candidate
runs this model's *own* first decoder layer and a slice of its head on the shapes the server uses:

- a window step: 9 tokens (a block of 8 plus its left neighbour) against cached context K/V;
- a context refresh: 128 tokens (scaled linearly to 512: a GEMM past ~64 rows is linear in rows);
- the error against fp32 on the same real-code tokens (relative error of the layer's hidden states
  and of the head's logits): a kernel that errs (an exception, NaN, or a relative error over
  `MAX_RELATIVE_ERROR`, as a u8s8 kernel that saturates without VNNI would) is not chosen.

The whole model's cost is predicted as num_layers x layer + head x (vocab / head slice), and the
candidate with the lowest `request cost` (one 512-token refresh + 16 window steps, the server's cold
request) wins; then the winner's step is timed with 1..physical cores threads and the fastest count is
kept (more threads only when >= 10% faster). The result is cached in a JSON file keyed by model,
CPU, torch version and oneDNN ISA limit, so a later start costs nothing; an entry made on another
CPU or torch is measured again (and says so).

Candidates (`KERNELS`): float32; bfloat16; int8 (int8 weights, per-token int8 activations, rest fp32).
An explicit dtype or quantize setting pins its axis; `auto` axes are measured.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Optional

import torch

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError

if TYPE_CHECKING:
    from coda_model.weights import WeightReader

MAX_RELATIVE_ERROR = 0.05      # a kernel's probe output may differ from fp32 by at most this (L2, relative)
HEAD_ROWS = 16384              # vocabulary rows of the head slice timed (scaled to the full vocabulary)
STEP_TOKENS, REFRESH_TOKENS, CONTEXT_TOKENS = 9, 128, 512
STEPS_PER_REQUEST = 16         # request cost = refresh(CONTEXT_TOKENS) + this many window steps
MIN_THREAD_GAIN = 0.10         # use more threads only when the step is at least this much faster
CACHE_VERSION = 1


@dataclass(frozen=True)
class Kernel:
    name: str                 # float32 | bfloat16 | int8
    dtype: torch.dtype        # float dtype of activations (and weights unless int8)
    int8: bool = False        # Linear and Embedding weights int8 (coda_model.int8)

    @property
    def weight_bytes_per_param(self) -> int:
        return 1 if self.int8 else torch.finfo(self.dtype).bits // 8


KERNELS = {"float32": Kernel("float32", torch.float32), "bfloat16": Kernel("bfloat16", torch.bfloat16),
           "int8": Kernel("int8", torch.float32, int8=True)}
# Decode agreement with fp32 exact decoding on the default model's held-out stdlib line holes, measured by
# `coda-bench realsize` (benchmarks/results/realsize.json, "default_model_agreement", exact decoding in both):
# (same tokens, same text). A kernel under the bar (tokens >= 0.9 and text >= 0.85, the bar the cache
# approximations meet) is not a candidate for `auto`; it can still be set explicitly.
# 62 holes, on a Xeon with AMX (int8 fails on text: 0.758; it stays available as `quantize: int8`).
AGREEMENT = {"float32": (1.0, 1.0), "bfloat16": (0.967, 0.855), "int8": (0.922, 0.758)}
AGREEMENT_BAR = (0.9, 0.85)


def meets_agreement_bar(name: str) -> bool:
    tokens, text = AGREEMENT.get(name, (0.0, 0.0))
    return tokens >= AGREEMENT_BAR[0] and text >= AGREEMENT_BAR[1]


DTYPE_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
               "float16": "float16", "fp16": "float16"}
QUANTIZE = ("auto", "none", "int8")


@dataclass
class Measurement:
    """One candidate's probe: predicted whole-model milliseconds and its error against fp32."""
    kernel: str
    step_ms: Optional[float] = None
    refresh_ms: Optional[float] = None      # a CONTEXT_TOKENS refresh
    relative_error: Optional[float] = None
    error: Optional[str] = None             # why it cannot be used (exception or accuracy)

    @property
    def ok(self) -> bool:
        return self.error is None and self.step_ms is not None

    @property
    def request_ms(self) -> float:
        return (self.refresh_ms or 0.0) + STEPS_PER_REQUEST * (self.step_ms or 0.0)


@dataclass
class KernelChoice:
    kernel: Kernel
    threads: Optional[int] = None           # None = leave torch's setting alone (explicit or non-CPU)
    reason: str = ""                        # one line for the status bar / log
    measured: list[Measurement] = field(default_factory=list)
    thread_ms: dict[int, float] = field(default_factory=dict)   # step ms of the chosen kernel per thread count
    cached: bool = False
    notes: list[str] = field(default_factory=list)              # one line each: fallbacks, stale caches

    def summary(self) -> str:
        return self.reason + "".join(f"; {n}" for n in self.notes)


# ------------------------------------------------------------------------------------------- the CPU
def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def physical_cores() -> int:
    """Physical cores this process may run on (hyperthread siblings counted once)."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:
        allowed = set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in allowed:
        try:
            siblings = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list").read_text().strip()
            cores.add(siblings)
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


ONEDNN_LEVELS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
                 "AVX512_CORE_BF16", "AVX10_1_512", "AVX512_CORE_AMX", "AVX10_1_512_AMX", "AVX512_CORE_AMX_FP16",
                 "AVX10_1_512_AMX_FP16")


def int8_isa_note(flags: set[str], isa: Optional[str] = None) -> str:
    """What int8 dot products oneDNN can use here (said in the status line: without VNNI int8 is slower).

    `isa`: ONEDNN_MAX_CPU_ISA, which caps what oneDNN uses below what the CPU has."""
    amx, vnni = "amx_int8" in flags, bool({"avx512_vnni", "avx_vnni"} & flags)
    cap = (isa or "").strip().upper()
    if cap in ONEDNN_LEVELS:
        amx = amx and "AMX" in cap
        vnni = vnni and ("VNNI" in cap or ONEDNN_LEVELS.index(cap) >= ONEDNN_LEVELS.index("AVX512_CORE_VNNI"))
    suffix = f" (ONEDNN_MAX_CPU_ISA={cap})" if cap in ONEDNN_LEVELS else ""
    if amx:
        return "AMX-INT8" + suffix
    if vnni:
        return "VNNI" + suffix
    return "no VNNI: int8 dot products in AVX2/AVX-512 steps" + suffix


def cpu_identity(onednn_isa: Optional[str] = None) -> dict:
    flags = cpu_flags()
    return {"cpu": cpu_name(), "flags_sha": hashlib.sha256(" ".join(sorted(flags)).encode()).hexdigest()[:16],
            "torch": torch.__version__, "onednn_max_cpu_isa": onednn_isa, "cores": physical_cores()}


# ------------------------------------------------------------------------------------------- candidates
def candidates(dtype: str, quantize: str) -> list[str]:
    """Kernel names consistent with the settings: an explicit axis is pinned, an 'auto' one is open."""
    dtype, quantize = DTYPE_NAMES.get(dtype, dtype), quantize.lower()
    if quantize not in QUANTIZE:
        raise ModelLoadError(f"unknown quantize {quantize!r}: use auto, none or int8")
    if dtype == "float16":
        raise ModelLoadError("float16 on CPU is ~1000x slower than bfloat16: use --dtype bfloat16 or float32")
    if dtype not in ("auto", "float32", "bfloat16"):
        raise ModelLoadError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    floats = [k for k in ("float32", "bfloat16") if meets_agreement_bar(k)] if dtype == "auto" else [dtype]
    if quantize == "int8":
        return ["int8"]
    if quantize == "none" or dtype != "auto":   # an explicit dtype asks for float weights of that dtype
        return floats
    return floats + ["int8"] if meets_agreement_bar("int8") else floats


def fixed_kernel(dtype: str, quantize: str, device: torch.device, stored_int8: bool = False) -> KernelChoice:
    """No measurement: an explicit setting on a CPU, or a GPU (bf16 for 'auto')."""
    from coda_model.devices import resolve_dtype
    if quantize == "int8" or (quantize == "auto" and stored_int8 and device.type == "cpu"):
        if device.type != "cpu":
            raise ModelLoadError("the int8 kernel is CPU-only: use --quantize none on a GPU")
        return KernelChoice(KERNELS["int8"], reason="int8 (set)")
    try:
        dt = resolve_dtype(dtype, device)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    name = str(dt).removeprefix("torch.")
    return KernelChoice(KERNELS.get(name, Kernel(name, dt)), reason=f"{name} ({'set' if dtype != 'auto' else device.type})")


# ------------------------------------------------------------------------------------------- the probe
class SliceProbe:
    """The model's first decoder layer and the first HEAD_ROWS rows of its head, real weights, fp32 masters."""

    def __init__(self, reader: "WeightReader", config: CodaConfig) -> None:
        from coda_model.network import CodaLM
        self.config = config
        self.rows = min(HEAD_ROWS, config.vocab_size)
        # special ids only matter to decoding; the slice keeps the first `rows` vocabulary rows
        small = replace(config, num_hidden_layers=1, vocab_size=self.rows, mask_token_id=0, pad_token_id=0,
                        eos_token_id=0, bos_token_id=0)
        with torch.device("meta"):
            model = CodaLM(small)
        state = {}
        for name, p in model.state_dict().items():
            source = name
            if name == "lm_head.weight" and not reader.has(name):
                source = "model.embed_tokens.weight"
            if name in ("model.embed_tokens.weight", "lm_head.weight"):
                t = reader.rows(source, p.shape[0])
                if reader.quantized and reader.has(source + "_scale"):
                    from coda_model.int8 import dequantize_rows
                    t = dequantize_rows(t, reader.rows(source + "_scale", p.shape[0]))
            else:
                t = reader.float(source, torch.float32)
            state[name] = t.float()
        model.load_state_dict(state, strict=True, assign=True)
        self.master = model.eval()
        self.ids = self._tokens()

    def _tokens(self) -> torch.Tensor:
        """Real code as token ids (this package's own source, bytes mapped into the slice's vocabulary)."""
        text = Path(__file__).read_bytes()
        n = REFRESH_TOKENS + STEP_TOKENS
        ids = torch.tensor(list(text[: 4 * n]), dtype=torch.long)
        ids = (ids[:-1] * 131 + ids[1:]) % self.rows      # byte pairs: a spread of real, repetitive ids
        return ids[:n][None]

    def build(self, kernel: Kernel) -> torch.nn.Module:
        import copy
        model = copy.deepcopy(self.master)
        if kernel.int8:
            from coda_model.int8 import Int8Embedding, Int8Linear, int8_modules, quantize_rows
            for name, module in int8_modules(model):
                parent_name, _, child = name.rpartition(".")
                parent = model.get_submodule(parent_name) if parent_name else model
                if isinstance(module, torch.nn.Linear):
                    twin: torch.nn.Module = Int8Linear.from_linear(module)
                else:
                    twin = Int8Embedding(module.num_embeddings, module.embedding_dim, kernel.dtype)
                    twin.set_weight(*quantize_rows(module.weight.detach()))
                setattr(parent, child, twin)
        return model.to(kernel.dtype) if not kernel.int8 else model

    def run(self, model: torch.nn.Module, repeats: int = 3) -> tuple[float, float, float, torch.Tensor]:
        """(layer+head step s, refresh s, head-only step s, hidden states of the refresh) for one kernel."""
        ids, ctx = self.ids, REFRESH_TOKENS
        window = torch.arange(STEP_TOKENS)
        with torch.no_grad():
            out = model(ids[:, :ctx], use_cache=True, logits_index=window)
            past = out.key_values
            pos = torch.arange(ctx, ctx + STEP_TOKENS)[None]
            step = lambda: model(ids[:, ctx:], position_ids=pos, past_key_values=past, logits_index=window)
            refresh = lambda: model(ids[:, :ctx], use_cache=True, logits_index=window)
            h = model.model.norm(torch.zeros(1, STEP_TOKENS, self.config.hidden_size, dtype=_act_dtype(model)))
            head = lambda: model.lm_head(h)
            t_step, t_refresh, t_head = best_seconds(step, repeats), best_seconds(refresh, repeats), best_seconds(head, repeats)
            hidden = model(ids[:, :ctx], return_hidden=True).logits.float()
        return t_step, t_refresh, t_head, hidden

    def measure(self, kernel: Kernel, reference: Optional[torch.Tensor], repeats: int = 3) -> tuple[Measurement, torch.Tensor]:
        layers, scale = self.config.num_hidden_layers, self.config.vocab_size / self.rows
        try:
            model = self.build(kernel)
            t_step, t_refresh, t_head, hidden = self.run(model, repeats)
        except Exception as exc:   # a kernel this torch build or CPU cannot run
            return Measurement(kernel.name, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"), None
        step = layers * max(t_step - t_head, 0.0) + scale * t_head
        refresh = (layers * max(t_refresh - t_head, 0.0)) * CONTEXT_TOKENS / REFRESH_TOKENS + scale * t_head
        m = Measurement(kernel.name, step_ms=round(1000 * step, 3), refresh_ms=round(1000 * refresh, 2))
        if reference is not None:
            err = float((hidden - reference).norm() / reference.norm().clamp_min(1e-12))
            m.relative_error = round(err, 5)
            if not err <= MAX_RELATIVE_ERROR:    # also catches NaN
                m.error = f"differs from fp32 by {err:.3g} (> {MAX_RELATIVE_ERROR})"
        return m, hidden


def _act_dtype(model: torch.nn.Module) -> torch.dtype:
    return model.model.norm.weight.dtype


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The fastest of `repeats` timed calls, after one untimed warm-up call."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_kernels(probe: SliceProbe, names: list[str], threads: int, repeats: int = 3) -> list[Measurement]:
    """Each candidate's Measurement at `threads` threads; fp32 first (it is the accuracy reference)."""
    torch.set_num_threads(threads)
    reference = None
    out = []
    order = ["float32"] + [n for n in names if n != "float32"]
    for name in order:
        m, hidden = probe.measure(KERNELS[name], reference, repeats)
        if name == "float32":
            reference = hidden
        if name in names:
            out.append(m)
    return out


def measure_threads(probe: SliceProbe, kernel: Kernel, max_threads: int, repeats: int = 3) -> dict[int, float]:
    model = probe.build(kernel)
    out = {}
    for n in range(1, max_threads + 1):
        torch.set_num_threads(n)
        t_step, _, _, _ = probe.run(model, repeats)
        out[n] = round(1000 * t_step, 3)
    return out


def pick_threads(thread_ms: dict[int, float]) -> int:
    """The fewest threads within MIN_THREAD_GAIN of the fastest step (a busy core punishes extra threads)."""
    best = min(thread_ms.values())
    chosen = max(thread_ms, key=lambda n: thread_ms[n])
    for n in sorted(thread_ms):
        if thread_ms[n] <= best * (1 + MIN_THREAD_GAIN):
            return n
    return chosen


# ------------------------------------------------------------------------------------------- the cache
def model_key(reader: "WeightReader") -> str:
    """Identity of the model's weights: config.json and each weight file's name, size and mtime."""
    h = hashlib.sha256((reader.path / "config.json").read_bytes())
    for f in sorted(set(reader.files.values())):
        st = f.stat()
        h.update(f"{f.name}:{st.st_size}:{int(st.st_mtime)}".encode())
    return h.hexdigest()[:24]


class KernelCache:
    """{model key: {identity, choice}} in one JSON file; written atomically, unreadable files ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> tuple[dict, Optional[str]]:
        if not self.path.is_file():
            return {}, None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            if data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
                return {}, f"kernel cache {self.path} is from another version: measured again"
            return data["entries"], None
        except (OSError, ValueError, AttributeError):
            return {}, f"kernel cache {self.path} is unreadable: measured again"

    def get(self, key: str, identity: dict) -> tuple[Optional[dict], Optional[str]]:
        entries, note = self._read()
        entry = entries.get(key)
        if entry is None:
            return None, note
        if entry.get("identity") != identity:
            theirs = entry.get("identity", {})
            what = ("another CPU" if theirs.get("cpu") != identity["cpu"] or theirs.get("flags_sha") != identity["flags_sha"]
                    else f"torch {theirs.get('torch')}" if theirs.get("torch") != identity["torch"] else "other settings")
            return None, f"the cached kernel choice was made on {what}: measured again"
        return entry, None

    def put(self, key: str, identity: dict, choice: KernelChoice) -> None:
        entries, _ = self._read()
        entries[key] = {"identity": identity, "kernel": choice.kernel.name, "threads": choice.threads,
                        "reason": choice.reason, "measured": [asdict(m) for m in choice.measured],
                        "thread_ms": {str(k): v for k, v in choice.thread_ms.items()}, "when": time.time()}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"version": CACHE_VERSION, "entries": entries}, indent=1) + "\n")
        os.replace(tmp, self.path)


# ------------------------------------------------------------------------------------------- the choice
def choose_kernel(reader: "WeightReader", config: CodaConfig, dtype: str = "auto", quantize: str = "auto",
                  cache: Optional[Path] = None, threads: Optional[int] = None, repeats: int = 3,
                  remeasure: bool = False) -> KernelChoice:
    """Measure the candidates on this model's own layer and pick the fastest that agrees with fp32.

    `threads`: a fixed count (the user's setting) instead of measuring one. Never raises for a kernel
    that fails: it is reported in `measured` and fp32 is the fallback."""
    names = candidates(dtype, quantize)
    identity = {**cpu_identity(os.environ.get("ONEDNN_MAX_CPU_ISA")), "candidates": names}
    notes = []
    if reader.quantized and "int8" not in names:
        notes.append("int8 weights dequantized to " + names[0])
    key = model_key(reader)
    store = KernelCache(cache) if cache else None
    entry = None
    if store is not None and not remeasure and len(names) > 1:
        entry, note = store.get(key, identity)
        if note:
            notes.append(note)
    probe = SliceProbe(reader, config)
    measured: list[Measurement] = []
    if entry is not None and entry.get("kernel") in KERNELS:
        kernel, cached = KERNELS[entry["kernel"]], True
        measured = [Measurement(**m) for m in entry.get("measured", [])]
    elif len(names) == 1 and not KERNELS[names[0]].int8:
        kernel, cached = KERNELS[names[0]], False
    else:
        cached = False
        # compared on one thread (robust on a busy machine); the winner's thread count is measured below
        measured = measure_kernels(probe, names, threads or 1, repeats)
        usable = [m for m in measured if m.ok]
        for m in measured:
            if not m.ok:
                notes.append(f"{m.kernel} not used: {m.error}")
        if not usable:
            notes.append("falling back to float32")
        kernel = KERNELS[min(usable, key=lambda m: m.request_ms).kernel if usable else "float32"]
    if kernel.int8:
        notes.append(f"int8 on {int8_isa_note(cpu_flags(), os.environ.get('ONEDNN_MAX_CPU_ISA'))}")
    # threads are measured at every load (a few window steps): how busy the other cores are changes
    thread_ms = {} if threads else measure_threads(probe, kernel, physical_cores(), repeats)
    chosen_threads = threads or pick_threads(thread_ms)
    torch.set_num_threads(chosen_threads)
    plural = "s" * (chosen_threads > 1)
    explicit = DTYPE_NAMES.get(dtype, dtype) != "auto" or quantize == "int8"
    tag = "fallback" if kernel.name not in names else "set" if explicit else "the only candidate"
    usable = [m for m in measured if m.ok]
    how = "cached measurement" if cached else "measured"
    reason = (f"{kernel.name}, {chosen_threads} thread{plural}: {how} per request "
              f"({', '.join(f'{m.kernel} {m.request_ms:.0f} ms' for m in usable)})" if len(usable) > 1
              else f"{kernel.name} ({tag}), {chosen_threads} thread{plural}"
              + ("" if threads is None else " (set)"))
    choice = KernelChoice(kernel, chosen_threads, reason, measured, thread_ms, cached=cached, notes=notes)
    if store is not None and not cached and len(usable) > 1:
        try:
            store.put(key, identity, choice)
        except OSError as exc:
            choice.notes.append(f"kernel cache not written ({exc})")
    return choice
