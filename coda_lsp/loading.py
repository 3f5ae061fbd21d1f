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


def cpu_threads(requested: Optional[int]) -> int:
    """Threads for the model's CPU ops: the setting, else OMP_NUM_THREADS, else half the cores.

    Why not every core (torch's default): an op split over all cores waits for its slowest thread, so a
    single core busy with anything else (a build, the browser, a test run) stalls every denoising step.
    Measured on a 2-core machine with one core busy: 16 steps of the default model took 0.24 s with one
    thread and 5.0 s with two. On an idle machine, two threads were only 1.5x faster than one."""
    if requested:
        return requested
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (os.cpu_count() or 2) // 2)


def set_cpu_threads(requested: Optional[int]) -> int:
    """Give torch `cpu_threads(requested)`; call it on the worker thread that decodes."""
    import torch
    threads = cpu_threads(requested)
    torch.set_num_threads(threads)
    return threads


def load_engine(options: ServerOptions) -> LoadedEngine:
    """Blocking: import torch + the engine and load the model (run it on the worker thread that decodes)."""
    path = resolve_model_path(options.model_path)
    t0 = time.perf_counter()
    set_cpu_threads(options.threads)
    from coda_model.checkpoint import load_model
    from coda_model.engine import Engine
    loaded = load_model(path, device=options.device, dtype=options.dtype)
    return LoadedEngine(Engine(loaded), loaded.tokenizer, path, str(loaded.device),
                        str(loaded.dtype).replace("torch.", ""), time.perf_counter() - t0,
                        context_store(options.context_cache_mb))


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
