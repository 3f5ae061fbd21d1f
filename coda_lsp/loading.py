"""Loading the model for the server and the one-shot commands: where it is, how many threads, on which device.

torch and the engine are imported only inside `load_engine`, which the server runs on its worker
thread, so the server answers `initialize` before torch is even imported.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from coda_model import ModelLoadError, default_model_path
from coda_model.hub import resolve_model_ref

from coda_lsp.cache_limits import CacheLimits
from coda_lsp.options import ServerOptions


class ModelUnavailable(Exception):
    """No model can be loaded; the message says what to pass."""


def default_model_dir() -> Path:
    return default_model_path()


def resolve_model_path(path: Optional[str]) -> Path:
    """The model directory to load: `path` (a directory or a cached HF repo id), else the embedded default model."""
    if path:
        try:   # checked before importing torch: a typo costs no start-up time
            return resolve_model_ref(path)
        except ModelLoadError as exc:
            raise ModelUnavailable(f"{exc} (--model or initializationOptions.modelPath)") from None
    default = default_model_dir()
    if not (default / "config.json").is_file():
        raise ModelUnavailable(f"no embedded default model in this install ({default} is empty): "
                               "pass --model PATH (or initializationOptions.modelPath) to a CoDA model directory")
    return default


@dataclass
class LoadedEngine:
    engine: Any                 # coda_model.engine.Engine
    tokenizer: Any              # coda_model.tokenizer.CodaTokenizer
    path: Path
    device: str
    dtype: str
    load_s: float
    contexts: Any = None        # coda_model.context_reuse.ContextStore: context K/V by document URI, or None (off)
    kernel: str = ""            # float32 | bfloat16 | int8 (coda_model.kernels)
    kernel_note: str = ""       # what was chosen and why, one line (the status line shows it)
    threads: Optional[int] = None   # threads for a request the user waits on (None: not a CPU choice)
    choice: Any = None              # coda_model.kernels.KernelChoice: the measurements behind `kernel`

    def describe(self) -> str:
        return f"{self.path.name} on {self.device} ({self.kernel_note or self.dtype})"

    def kernel_report(self) -> dict:
        """The kernel table for `coda-lsp calibrate`: each candidate's predicted step / refresh and error."""
        c = self.choice
        if c is None:
            return {"kernel": self.kernel or self.dtype}
        from dataclasses import asdict
        return {"kernel": c.kernel.name, "threads": c.threads, "reason": c.summary(), "cached": c.cached,
                "candidates": [asdict(m) for m in c.measured], "step_ms_by_threads": c.thread_ms}


def kernel_cache_path() -> Path:
    """Where load-time kernel measurements are kept, per model and CPU: platformdirs' user cache
    (CODA_KERNEL_CACHE names another file; the tests use one of their own)."""
    if os.environ.get("CODA_KERNEL_CACHE"):
        return Path(os.environ["CODA_KERNEL_CACHE"])
    import platformdirs
    return Path(platformdirs.user_cache_dir("coda-lsp", appauthor=False)) / "kernels.json"


def cpu_threads(requested: Optional[int]) -> Optional[int]:
    """Threads for a request: the setting, else OMP_NUM_THREADS, else None (measured at load: every
    physical core unless fewer were as fast, as on a machine with a busy core, where one straggling
    thread stalls every step: measured 5.0 s vs 0.24 s for 16 steps of the default model)."""
    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return None


def set_cpu_threads(requested: Optional[int]) -> int:
    """Give torch `cpu_threads(requested)` (or every physical core); call it on the worker thread that decodes."""
    import torch
    from coda_model.kernels import physical_cores
    threads = cpu_threads(requested) or physical_cores()
    torch.set_num_threads(threads)
    return threads


def load_engine(options: ServerOptions, remeasure: bool = False) -> LoadedEngine:
    """Blocking: import torch + the engine and load the model (run it on the worker thread that decodes).

    A quantized directory made from another model falls back to its recorded source in fp32 (said in
    `kernel_note`) when that source is still on disk."""
    path = resolve_model_path(options.model_path)
    t0 = time.perf_counter()
    set_cpu_threads(options.threads)
    from coda_model.checkpoint import load_model
    from coda_model.engine import Engine
    from coda_model.quantized import QuantizedMismatch
    fallback = ""
    try:
        loaded = load_model(path, device=options.device, dtype=options.dtype, quantize=options.quantize,
                            kernel_cache=kernel_cache_path(), threads=cpu_threads(options.threads),
                            remeasure=remeasure)
    except QuantizedMismatch as exc:
        if exc.source is None or not (exc.source / "config.json").is_file():
            raise
        fallback = f"{exc}; using its source {exc.source} in float32"
        loaded = load_model(exc.source, device=options.device, dtype="float32", quantize="none")
    choice = loaded.kernel
    note = choice.summary() if choice else str(loaded.dtype).replace("torch.", "")
    note = f"{note}; {fallback}" if fallback else note
    return LoadedEngine(Engine(loaded), loaded.tokenizer, loaded.path, str(loaded.device),
                        str(loaded.dtype).replace("torch.", ""), time.perf_counter() - t0,
                        context_store(options.context_cache_mb), kernel=loaded.kernel_name, kernel_note=note,
                        threads=choice.threads if choice else None, choice=choice)


def context_store(megabytes: int):
    """The per-document context K/V store: at most `CacheLimits.context_kv_entries` documents and `megabytes` MB
    (least recently used dropped first; one entry over the bound is still kept), None when 0."""
    if megabytes <= 0:
        return None
    from coda_model.context_reuse import ContextStore
    return ContextStore(max_entries=CacheLimits.context_kv_entries, max_bytes=megabytes * 2**20)


def open_engine(options: ServerOptions) -> Any:
    """What decodes: the remote engine when `options.engine` is set (nothing is loaded here), else the model."""
    if options.engine:
        from coda_lsp.http.remote import RemoteEngine
        return RemoteEngine(options.engine, api_key=options.api_key)
    return load_engine(options)
