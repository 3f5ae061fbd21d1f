"""Find the diffusion code models a user already has: in the Hugging Face cache and in given folders.

`coda-lsp models [FOLDER...]` prints one row per model directory that a supported family adapter
accepts (coda_model.families): family, parameter count and dtype read from the safetensors headers
(no tensor is loaded), and size on disk. Anything else (AR checkpoints, datasets, junk) is skipped.
Torch-free and offline.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from coda_model.errors import ModelLoadError, read_json_object
from coda_model.families import detect_family

SAFETENSORS_DTYPES = {"F32": "float32", "BF16": "bfloat16", "F16": "float16", "F64": "float64", "I64": "int64",
                      "I32": "int32", "I8": "int8", "U8": "uint8", "BOOL": "bool", "F8_E4M3": "float8_e4m3",
                      "F8_E5M2": "float8_e5m2"}


@dataclass
class ModelEntry:
    name: str          # repo id (cache) or folder name
    path: Path         # the directory --model takes
    family: str        # family label, e.g. "Dream"
    num_parameters: int
    dtype: str
    size_bytes: int    # bytes on disk of the directory's files (cache symlinks followed)

    def row(self) -> list[str]:
        return [self.name, self.family, human_count(self.num_parameters), self.dtype, human_bytes(self.size_bytes),
                str(self.path)]


def human_count(n: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def human_bytes(n: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def safetensors_header(file: Path) -> dict:
    """The JSON header of a safetensors file: tensor name -> {dtype, shape, data_offsets}."""
    with open(file, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        if size > 100 << 20:
            raise ValueError(f"{file.name}: implausible safetensors header")
        header = json.loads(f.read(size))
    header.pop("__metadata__", None)
    return header


def weights_summary(path: Path) -> Optional[tuple[int, str]]:
    """(parameter count, most common dtype) over the directory's safetensors files, or None without any."""
    files = sorted(path.glob("*.safetensors"))
    if not files:
        return None
    count, dtypes = 0, Counter()
    for file in files:
        for info in safetensors_header(file).values():
            n = 1
            for dim in info["shape"]:
                n *= int(dim)
            count += n
            dtypes[SAFETENSORS_DTYPES.get(info["dtype"], info["dtype"].lower())] += n
    return count, dtypes.most_common(1)[0][0] if dtypes else "?"


def inspect_model_dir(path: Path, name: Optional[str] = None) -> Optional[ModelEntry]:
    """A ModelEntry when `path` holds a model of a supported family with safetensors weights, else None."""
    config = path / "config.json"
    if not config.is_file():
        return None
    try:
        family = detect_family(read_json_object(config), config)
        family.to_config(read_json_object(config))
        summary = weights_summary(path)
    except (ModelLoadError, ValueError, KeyError, OSError, struct.error):
        return None
    if summary is None:
        return None
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return ModelEntry(name or path.name, path, family.label, summary[0], summary[1], size)


def scan_hf_cache(cache_dir: Optional[Path] = None) -> list[ModelEntry]:
    """Model snapshots in the Hugging Face cache (huggingface_hub's own scanner; nothing is downloaded)."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.utils import CacheNotFound

    try:
        info = scan_cache_dir(cache_dir)
    except CacheNotFound:
        return []
    entries = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)[:1]:
            entry = inspect_model_dir(revision.snapshot_path, repo.repo_id)
            if entry is not None:
                entries.append(entry)
    return entries


def scan_folders(folders: Iterable[Path]) -> list[ModelEntry]:
    """Each folder itself if it is a model directory, else its model subdirectories (two levels deep)."""
    entries = []
    for folder in folders:
        folder = Path(folder).expanduser()
        candidates = [folder, *sorted(p for p in folder.glob("*") if p.is_dir()),
                      *sorted(p for p in folder.glob("*/*") if p.is_dir())]
        for cand in candidates:
            entry = inspect_model_dir(cand)
            if entry is not None:
                entries.append(entry)
            if cand == folder and entry is not None:
                break
    return entries


def format_table(entries: list[ModelEntry]) -> str:
    header = ["MODEL", "FAMILY", "PARAMS", "DTYPE", "SIZE", "PATH"]
    rows = [header, *(e.row() for e in entries)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(c.ljust(w) for c, w in zip(r, widths)), r[-1]]) for r in rows)
