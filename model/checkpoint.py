"""Load and save Hugging Face-format CoDA directories (safetensors only, never pickle).

A directory holds `config.json`, tokenizer files and either `model.safetensors` or shards listed in
`model.safetensors.index.json`. The network is built on the meta device and each tensor is read
from the memory-mapped file, cast to the target dtype/device and assigned in place, so loading never
holds a second full copy of the weights in RAM.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError
from coda_model.families import Family, detect_family
from coda_model.hub import resolve_model_ref
from coda_model.network import CodaLM
from coda_model.tokenizer import CodaTokenizer

if TYPE_CHECKING:
    from coda_model.kernels import KernelChoice

WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.pt", "model.pth")
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


@dataclass
class LoadedModel:
    model: CodaLM
    config: CodaConfig
    tokenizer: CodaTokenizer
    path: Path
    device: torch.device
    dtype: torch.dtype                       # activations' float dtype (and the weights', unless int8)
    kernel: Optional["KernelChoice"] = None  # how its matrices are multiplied here, and why (coda_model.kernels)

    @property
    def kernel_name(self) -> str:
        return self.kernel.kernel.name if self.kernel else str(self.dtype).removeprefix("torch.")


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device not in ("cpu", "cuda", "mps") and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or mps")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for but torch sees no CUDA GPU: use --device cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs (on a CPU 'auto' is measured instead: `coda_model.kernels`). Never fp16 on CPU."""
    if dtype == "auto":
        if device.type == "cpu":
            raise ValueError("dtype 'auto' on a CPU is chosen by measurement (coda_model.kernels.choose_kernel)")
        return torch.bfloat16
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}: use auto, float32 or bfloat16")
    out = DTYPES[dtype]
    if out == torch.float16 and device.type == "cpu":
        raise ValueError("float16 on CPU is ~1000x slower than bfloat16: use --dtype bfloat16 or float32")
    return out


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
        with _open(single) as f:
            return {name: single for name in f.keys()}
    shards = sorted(path.glob("*.safetensors"))
    if len(shards) == 1:  # a lone, differently named file
        with _open(shards[0]) as f:
            return {name: shards[0] for name in f.keys()}
    if any((path / p).exists() for p in PICKLE_NAMES):
        raise ModelLoadError(f"{path} holds only a pickle checkpoint (pytorch_model.bin); pickles can run code and are "
                             "refused: convert it to safetensors (safetensors.torch.save_file) and try again")
    raise ModelLoadError(f"{path} has no weights: expected {WEIGHTS_NAME} or {INDEX_NAME} with its shards")


def _open(file: Path):
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
            self._file, self._handle = file, _open(file).__enter__()
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


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto", quantize: str = "none",
               kernel_cache: Optional[Path] = None, threads: Optional[int] = None,
               remeasure: bool = False) -> LoadedModel:
    """Load a model directory (or a Hugging Face repo id in the local cache) of a supported family.

    On a CPU, `dtype="auto"` and `quantize="auto"` are decided by measuring this model's own layers
    (`coda_model.kernels`; cached in `kernel_cache` when given); `quantize="int8"` stores every Linear
    and the embedding as int8 (`coda_model.int8`), quantized tensor by tensor while loading.
    Every failure is a ModelLoadError whose message says what to do."""
    path = resolve_model_ref(str(path))
    family, config = read_config(path)
    tokenizer = CodaTokenizer.from_dir(path, ids={"mask": config.mask_token_id, "pad": config.pad_token_id,
                                                  "eos": config.eos_token_id})
    check_tokenizer_matches(config, tokenizer, path)
    from coda_model import quantized as qdir
    stored_int8 = qdir.check_quantized_dir(path, config)
    stored_qmax = int((qdir.quantization_config(path) or {}).get("weight_qmax", 127))
    try:
        dev = resolve_device(device)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    reader = WeightReader(path, family, quantized=stored_int8, stored_qmax=stored_qmax)
    try:
        check_weights(reader, config)    # before any measurement: a mismatch costs one line, not a probe
        if dev.type == "cpu":   # measured: the kernel where a setting is 'auto', the threads unless given
            from coda_model.kernels import choose_kernel
            choice = choose_kernel(reader, config, dtype=dtype, quantize=quantize, cache=kernel_cache, threads=threads,
                                   remeasure=remeasure)
        else:
            from coda_model.kernels import fixed_kernel
            choice = fixed_kernel(dtype, quantize, dev, stored_int8)
        return LoadedModel(*_build(reader, config, dev, choice.kernel), tokenizer=tokenizer, path=path, device=dev,
                           dtype=choice.kernel.dtype, kernel=choice)
    finally:
        reader.close()


def check_weights(reader: WeightReader, config: CodaConfig) -> tuple[dict[str, tuple[int, ...]], bool]:
    """Every tensor config.json implies, with its shape, checked against the files' headers (no data read).

    Returns ({our name: shape}, tied) where tied = the head is the embedding (no lm_head tensor stored)."""
    with torch.device("meta"):
        model = CodaLM(config)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    tied = config.tie_word_embeddings and not reader.has("lm_head.weight")
    if tied:
        del expected["lm_head.weight"]  # filled from the embedding
    missing = sorted(n for n in expected if not reader.has(n))
    if missing:
        raise ModelLoadError(f"{reader.path} lacks {len(missing)} tensors (first: {reader.family.checkpoint_name(missing[0])}): "
                             "the checkpoint does not match config.json; download the complete model again")
    for name in sorted(expected, key=lambda n: str(reader.file_of(n))):
        shape = reader.shape(name)
        if shape != expected[name]:
            hint = (" (vocab_size in config.json does not match the embedding rows)"
                    if name in ("model.embed_tokens.weight", "lm_head.weight") and shape[1:] == expected[name][1:] else "")
            raise ModelLoadError(f"tensor {name} in {reader.file_of(name).name} has shape {list(shape)} but config.json "
                                 f"implies {list(expected[name])}{hint}: config and weights come from different models")
    return expected, tied


def _build(reader: WeightReader, config: CodaConfig, dev: torch.device, kernel) -> tuple[CodaLM, CodaConfig]:
    """The network with `kernel`'s weights, read tensor by tensor (int8 ones quantized as they arrive)."""
    dt = kernel.dtype
    expected, tied = check_weights(reader, config)
    with torch.device("meta"):
        model = CodaLM(config)
    int8_names: set[str] = set()
    if kernel.int8:
        from coda_model.int8 import replace_with_int8
        with torch.device("meta"):
            int8_names = {n + ".weight" for n in replace_with_int8(model, dt)}
        if tied:
            expected["lm_head.weight"] = expected["model.embed_tokens.weight"]
    state: dict[str, torch.Tensor] = {}
    for name in sorted(expected, key=lambda n: str(reader.file_of(n if reader.has(n) else "model.embed_tokens.weight"))):
        source = name if reader.has(name) else "model.embed_tokens.weight"   # a tied head reads the embedding
        if name in int8_names:
            q, scale = reader.int8(source)
            model.get_submodule(name.rsplit(".", 1)[0]).set_weight(q.to(dev), scale.to(dev))
            del q, scale
        else:
            state[name] = reader.float(source, dt).to(device=dev)
    if tied and not kernel.int8:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return model, config


def check_tokenizer_matches(config: CodaConfig, tokenizer: CodaTokenizer, path: Path) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(f"{path}: the tokenizer has {tokenizer.vocab_size} ids but config.json vocab_size is "
                             f"{config.vocab_size}: tokenizer and model come from different models")
    if tokenizer.mask_id != config.mask_token_id:
        raise ModelLoadError(f"{path}: config.json mask_token_id={config.mask_token_id} but the tokenizer's mask token "
                             f"{tokenizer.mask_token!r} has id {tokenizer.mask_id}: fix mask_token_id in config.json")


def save_model(model: CodaLM, path: str | Path, tokenizer: Optional[CodaTokenizer] = None,
               dtype: Optional[torch.dtype] = None, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Write config.json, (sharded) safetensors and the tokenizer; files are written atomically."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu", dtype or v.dtype).contiguous() for k, v in model.state_dict().items()}
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    config = model.config
    config.torch_dtype = str(next(iter(state.values())).dtype).removeprefix("torch.")
    meta = {"format": "pt"}
    if len(shards) == 1:
        _atomic(path / WEIGHTS_NAME, lambda tmp: save_file(shards[0], tmp, metadata=meta))
        (path / INDEX_NAME).unlink(missing_ok=True)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            _atomic(path / fname, lambda tmp, shard=shard: save_file(shard, tmp, metadata=meta))
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        _atomic(path / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2) + "\n"))
        (path / WEIGHTS_NAME).unlink(missing_ok=True)
    _atomic(path / "config.json", lambda tmp: config.save_json(tmp))
    if tokenizer is not None:
        tokenizer.save(path)
    return path


def _atomic(target: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
