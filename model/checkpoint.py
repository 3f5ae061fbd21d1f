"""Load and save Hugging Face-format CoDA directories (safetensors only, never pickle).

A directory holds `config.json`, tokenizer files and either `model.safetensors` or shards listed in
`model.safetensors.index.json`. The network is built on the meta device and each tensor is read
from the memory-mapped file, cast to the target dtype/device and assigned in place, so loading never
holds a second full copy of the weights in RAM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import torch
from safetensors.torch import save_file

from coda_model.config import CodaConfig
from coda_model.devices import DTYPES, resolve_device, resolve_dtype   # noqa: F401 (re-exported)
from coda_model.errors import ModelLoadError, ModelSaveError
from coda_model.hub import resolve_model_ref
from coda_model.network import CodaLM
from coda_model.tokenizer import CodaTokenizer
from coda_model.weights import (INDEX_NAME, PICKLE_NAMES, WEIGHTS_NAME, WeightReader, atomic_write,  # noqa: F401
                                read_config, weight_files)

if TYPE_CHECKING:
    from coda_model.kernels import KernelChoice




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
        atomic_write(path / WEIGHTS_NAME, lambda tmp: save_file(shards[0], tmp, metadata=meta))
        (path / INDEX_NAME).unlink(missing_ok=True)
    else:
        weight_map = {}
        for i, shard in enumerate(shards, 1):
            fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
            atomic_write(path / fname, lambda tmp, shard=shard: save_file(shard, tmp, metadata=meta))
            weight_map.update({name: fname for name in shard})
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
        atomic_write(path / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2) + "\n"))
        (path / WEIGHTS_NAME).unlink(missing_ok=True)
    atomic_write(path / "config.json", lambda tmp: config.save_json(tmp))
    if tokenizer is not None:
        tokenizer.save(path)
    return path
