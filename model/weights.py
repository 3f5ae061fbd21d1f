"""Reading a model directory's safetensors: which file holds each tensor, and tensors by our names.

Loading (`coda_model.checkpoint`), the kernel probe (`coda_model.kernels`) and quantized copies
(`coda_model.quantized`) all read through `WeightReader`, memory-mapped, one file open at a time.
safetensors only; pickles are refused (they can run code). Writes are atomic (`atomic_write`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Optional

import torch
from safetensors import safe_open

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError
from coda_model.families import Family, detect_family

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")


def weight_files(path: Path) -> dict[str, Path]:
    """Map every tensor name to the safetensors file that holds it, checking the files exist."""
    index = path / INDEX_NAME
    single = path / WEIGHTS_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"{index} is invalid ({exc}): restore it from the model download") from exc
        files = {name: path / fname for name, fname in weight_map.items()}
        for fname in sorted({f for f in files.values()}):
            if not fname.is_file():
                raise ModelLoadError(f"shard {fname.name} listed in {index.name} is missing from {path}: "
                                     "download the complete model again")
        return files
    if single.is_file():
        with open_safetensors(single) as f:
            return {name: single for name in f.keys()}
    shards = sorted(path.glob("*.safetensors"))
    if len(shards) == 1:  # a lone, differently named file
        with open_safetensors(shards[0]) as f:
            return {name: shards[0] for name in f.keys()}
    if any((path / p).exists() for p in PICKLE_NAMES):
        raise ModelLoadError(f"{path} holds only a pickle checkpoint (pytorch_model.bin); pickles can run code and are "
                             "refused: convert it to safetensors (safetensors.torch.save_file) and try again")
    raise ModelLoadError(f"{path} has no weights: expected {WEIGHTS_NAME} or {INDEX_NAME} with its shards")


def open_safetensors(file: Path):
    try:
        return safe_open(str(file), framework="pt", device="cpu")
    except Exception as exc:  # safetensors raises SafetensorError / OSError on truncated or garbage files
        raise ModelLoadError(f"{file} is not a readable safetensors file ({exc}): download it again") from exc


def read_config(path: Path) -> tuple[Family, CodaConfig]:
    """The directory's family adapter and its config.json read through it."""
    data = CodaConfig.read_json(path / "config.json")
    family = detect_family(data, path / "config.json")
    return family, family.to_config(data)


class WeightReader:
    """Tensors of a model directory by *our* name, read from the memory-mapped safetensors files.

    Keeps one file open at a time (shards are read in file order by `load_model`), so at most one
    tensor's worth of float data is alive outside the model while it loads. Quantized directories
    (`coda_model.quantized`) hold int8 rows plus a `<name>_scale` vector for each quantized tensor."""

    def __init__(self, path: Path, family: Family, quantized: bool = False, stored_qmax: int = 127) -> None:
        self.path, self.family, self.quantized, self.stored_qmax = path, family, quantized, stored_qmax
        self.files = weight_files(path)
        self._file: Optional[Path] = None
        self._handle = None

    def has(self, name: str) -> bool:
        return self.family.checkpoint_name(name) in self.files

    def _h(self, name: str):
        file = self.files[self.family.checkpoint_name(name)]
        if file != self._file:
            self.close()
            self._file, self._handle = file, open_safetensors(file).__enter__()
        return self._handle

    def file_of(self, name: str) -> Path:
        return self.files[self.family.checkpoint_name(name)]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._h(name).get_slice(self.family.checkpoint_name(name)).get_shape())

    def get(self, name: str) -> torch.Tensor:
        return self._h(name).get_tensor(self.family.checkpoint_name(name))

    def rows(self, name: str, stop: int) -> torch.Tensor:
        """The first `stop` rows of a 2-D tensor (a slice read, not the whole tensor)."""
        return self._h(name).get_slice(self.family.checkpoint_name(name))[:stop]

    def int8(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 rows, fp32 scales) of a weight: stored as such in a quantized directory, else quantized now."""
        from coda_model.int8 import dequantize_rows, quantize_rows, weight_qmax
        if self.quantized and self.has(name + "_scale"):
            q = self.get(name)
            if q.dtype != torch.int8:
                raise ModelLoadError(f"{self.file_of(name).name}: {name} is {q.dtype}, not int8, in a quantized directory: "
                                     "run `coda-lsp quantize` again")
            scale = self.get(name + "_scale").float()
            if self.stored_qmax > weight_qmax():   # written on a CPU with VNNI: 7-bit rows for this one
                return quantize_rows(dequantize_rows(q, scale))
            return q, scale
        return self._quantize_in_chunks(name)

    def _quantize_in_chunks(self, name: str, rows_per_chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize a weight a few thousand rows at a time, read as slices of the mapped file, so a 151,936-row
        head never has a float copy in RAM (a whole-tensor bf16 + fp32 copy of it is 1.9 GB)."""
        from coda_model.int8 import quantize_rows, weight_qmax
        shape = self.shape(name)
        if len(shape) != 2:
            return quantize_rows(self.get(name))
        q = torch.empty(shape, dtype=torch.int8)
        scale = torch.empty(shape[0], dtype=torch.float32)
        view = self._h(name).get_slice(self.family.checkpoint_name(name))
        qmax = weight_qmax()
        for start in range(0, shape[0], rows_per_chunk):
            stop = min(shape[0], start + rows_per_chunk)
            q[start:stop], scale[start:stop] = quantize_rows(view[start:stop], qmax)
        return q, scale

    def float(self, name: str, dtype: torch.dtype) -> torch.Tensor:
        """A tensor as `dtype` (an int8 tensor of a quantized directory is dequantized)."""
        t = self.get(name)
        if t.dtype == torch.int8 and self.has(name + "_scale"):
            from coda_model.int8 import dequantize_rows
            return dequantize_rows(t, self.get(name + "_scale"), dtype)
        return t.to(dtype)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
        self._file, self._handle = None, None


def atomic_write(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
