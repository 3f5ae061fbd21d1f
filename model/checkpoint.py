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
from typing import Optional

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError, ModelSaveError
from coda_model.families import Family, detect_family
from coda_model.hub import resolve_model_ref
from coda_model.network import CodaLM
from coda_model.tokenizer import CodaTokenizer

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
    dtype: torch.dtype


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
    """'auto': bf16 on GPUs; on a CPU bf16 only with bf16 matrix units, measured (`coda_model.cpu_dtype`),
    else fp32. Never fp16 on CPU."""
    if dtype == "auto":
        if device.type == "cpu":
            from coda_model.cpu_dtype import choose_cpu_dtype
            return choose_cpu_dtype()
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


def load_model(path: str | Path, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """Load a model directory (or a Hugging Face repo id in the local cache) of a supported family.

    Every failure is a ModelLoadError whose message says what to do."""
    path = resolve_model_ref(str(path))
    family, config = read_config(path)
    tokenizer = CodaTokenizer.from_dir(path, ids={"mask": config.mask_token_id, "pad": config.pad_token_id,
                                                  "eos": config.eos_token_id})
    check_tokenizer_matches(config, tokenizer, path)
    try:
        dev, dt = resolve_device(device), None
        dt = resolve_dtype(dtype, dev)
    except ValueError as exc:
        raise ModelLoadError(str(exc)) from exc
    with torch.device("meta"):
        model = CodaLM(config)
    expected = {name: tuple(p.shape) for name, p in model.state_dict().items()}
    theirs = weight_files(path)
    files = {name: theirs[family.checkpoint_name(name)] for name in expected if family.checkpoint_name(name) in theirs}
    tied = config.tie_word_embeddings and "lm_head.weight" not in files
    if tied:
        del expected["lm_head.weight"]  # filled from the embedding below
    missing = sorted(set(expected) - set(files))
    if missing:
        raise ModelLoadError(f"{path} lacks {len(missing)} tensors (first: {family.checkpoint_name(missing[0])}): "
                             "the checkpoint does not match config.json; download the complete model again")
    state: dict[str, torch.Tensor] = {}
    by_file: dict[Path, list[str]] = {}
    for name in expected:
        by_file.setdefault(files[name], []).append(name)
    for file, names in by_file.items():
        with _open(file) as f:
            for name in names:
                shape = tuple(f.get_slice(family.checkpoint_name(name)).get_shape())
                if shape != expected[name]:
                    hint = (" (vocab_size in config.json does not match the embedding rows)"
                            if name in ("model.embed_tokens.weight", "lm_head.weight") and shape[1:] == expected[name][1:] else "")
                    raise ModelLoadError(f"tensor {name} in {file.name} has shape {list(shape)} but config.json implies "
                                         f"{list(expected[name])}{hint}: config and weights come from different models")
                state[name] = f.get_tensor(family.checkpoint_name(name)).to(device=dev, dtype=dt)
    if tied:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    return LoadedModel(model=model, config=config, tokenizer=tokenizer, path=path, device=dev, dtype=dt)


def check_tokenizer_matches(config: CodaConfig, tokenizer: CodaTokenizer, path: Path) -> None:
    if tokenizer.vocab_size > config.vocab_size:
        raise ModelLoadError(f"{path}: the tokenizer has {tokenizer.vocab_size} ids but config.json vocab_size is "
                             f"{config.vocab_size}: tokenizer and model come from different models")
    if tokenizer.mask_id != config.mask_token_id:
        raise ModelLoadError(f"{path}: config.json mask_token_id={config.mask_token_id} but the tokenizer's mask token "
                             f"{tokenizer.mask_token!r} has id {tokenizer.mask_id}: fix mask_token_id in config.json")


def save_model(model: CodaLM, path: str | Path, tokenizer: Optional[CodaTokenizer] = None,
               dtype: Optional[torch.dtype] = None, max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Write config.json, (sharded) safetensors and the tokenizer; files are written atomically.

    Only CoDA models: the layout written is CoDA's (Qwen3 field and tensor names), and a Dream or LLaDA
    model written so would not load back as itself, so it is refused before anything is written."""
    if model.config.family != "coda":
        raise ModelSaveError(f"cannot save a {model.config.family} model: only the CoDA layout is written and a "
                             f"{model.config.family} model would not load back from it; keep (or copy) its original "
                             f"directory")
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
