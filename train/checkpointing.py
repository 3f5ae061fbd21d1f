"""Training checkpoints that are never half-written, and resuming from the newest good one.

`RUN/checkpoints/step-00000100/` is itself a loadable Hugging Face CoDA directory (config.json,
model.safetensors, tokenizer files) plus the training state:
- `optimizer.pt`  optimizer + LR scheduler state (tensors and numbers only: loaded with weights_only=True);
- `rng.pt`        torch CPU / CUDA RNG states;
- `trainer.json`  step, data position (rows consumed), tokens seen, elapsed time, config;
- `manifest.json` size and sha256 of every file above, written last.

Everything is written into a hidden temp directory that is renamed into place only when complete, so a
crash leaves either the old set of checkpoints or the new one. On resume each candidate is verified
against its manifest (newest first); a corrupt or partial one is reported and the previous one is used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from safetensors.torch import load_file

from coda_model.config import CodaConfig

MANIFEST = "manifest.json"
TRAINER_STATE = "trainer.json"
PREFIX = "step-"


class CheckpointError(RuntimeError):
    """No usable checkpoint, or one that does not fit the model being trained."""


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    rows_consumed: int = 0  # global data position (rows, over all epochs)
    tokens_seen: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def checkpoint_root(out_dir: str | Path) -> Path:
    return Path(out_dir) / "checkpoints"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def write_checkpoint(out_dir: str | Path, state: TrainState, *, model_state: dict[str, torch.Tensor],
                     model_config: CodaConfig, tokenizer, optim_state: dict, rng_state: dict,
                     train_config: dict, keep: int = 2) -> Path:
    """Write step-NNNNNNNN atomically (temp dir + rename), then prune to the newest `keep`."""
    from safetensors.torch import save_file  # noqa: PLC0415

    root = checkpoint_root(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{state.step:08d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}-{time.time_ns()}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().to("cpu").contiguous() for k, v in model_state.items()}
        save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = CodaConfig.from_dict(model_config.to_dict())
        cfg.torch_dtype = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        cfg.save_json(tmp / "config.json")
        if tokenizer is not None:
            tokenizer.save(tmp)
        torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(rng_state, tmp / "rng.pt")
        (tmp / TRAINER_STATE).write_text(json.dumps({**state.to_dict(), "config": train_config}, indent=1) + "\n")
        files = {p.name: {"size": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        (tmp / MANIFEST).write_text(json.dumps({"step": state.step, "files": files}, indent=1) + "\n")
        _fsync_dir(tmp)
        if final.exists():  # a re-run of the same step: replace it
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    for old in list_checkpoints(out_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    """Completed checkpoint directories, oldest first (temp dirs are ignored)."""
    root = checkpoint_root(out_dir)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX))


def verify_checkpoint(path: Path, full: bool = True) -> Optional[str]:
    """None if `path` is complete and intact, else the reason it is not."""
    manifest = path / MANIFEST
    if not manifest.is_file():
        return "no manifest.json (partial write)"
    try:
        files = json.loads(manifest.read_text())["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return "manifest.json is unreadable"
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            return f"{name} is missing"
        if f.stat().st_size != meta["size"]:
            return f"{name} has {f.stat().st_size} bytes, expected {meta['size']}"
        if full and _sha256(f) != meta["sha256"]:
            return f"{name} does not match its checksum"
    return None


def find_checkpoint(path: str | Path, log=print) -> Optional[Path]:
    """The newest intact checkpoint under a run dir (or `path` itself if it is a checkpoint dir)."""
    path = Path(path)
    if (path / MANIFEST).exists() or path.name.startswith(PREFIX):
        problem = verify_checkpoint(path)
        if problem:
            raise CheckpointError(f"checkpoint {path} is unusable: {problem}")
        return path
    for cand in reversed(list_checkpoints(path)):
        problem = verify_checkpoint(cand)
        if problem is None:
            return cand
        log(f"warning: checkpoint {cand} is corrupt or partial ({problem}); trying the previous one")
    return None


def read_trainer_state(path: Path) -> tuple[TrainState, dict]:
    data = json.loads((path / TRAINER_STATE).read_text())
    config = data.pop("config", {})
    return TrainState(**{k: data[k] for k in TrainState().__dict__ if k in data}), config


def check_same_shape(path: Path, cfg: CodaConfig) -> None:
    """Refuse (before any compute) a checkpoint whose model shape differs from the configured one."""
    theirs = CodaConfig.from_json(path / "config.json")
    fields = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim")
    diff = [f"{f} {getattr(theirs, f)} != {getattr(cfg, f)}" for f in fields if getattr(theirs, f) != getattr(cfg, f)]
    if diff:
        raise CheckpointError(f"checkpoint {path} is from another model shape ({'; '.join(diff)}): "
                              "use a fresh run.out_dir or the matching [model] settings")


def load_model_state(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "model.safetensors"))


def load_training_state(path: Path) -> tuple[dict, dict]:
    optim = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
    rng = torch.load(path / "rng.pt", map_location="cpu", weights_only=True)
    return optim, rng
