"""Quantized model directories: an int8 copy of a model that loads without quantizing again.

`coda-lsp quantize SRC DST` calls `write_quantized`. DST is an ordinary model directory (config.json,
tokenizer files, safetensors) whose Linear and embedding weights are int8 rows with a `<name>_scale`
fp32 vector each; norms stay float. config.json gains

    "quantization_config": {"quant_method": "coda-int8", "format_version": 1,
                            "source_fingerprint": <sha of the source config>, "source": <source path>}

Why a fingerprint: a DST whose config.json was replaced by another model's (or whose weights were
copied beside another model's config) would load int8 rows under the wrong architecture. The loader
recomputes the fingerprint from DST's own config and refuses a mismatch with one line; the server
then falls back to the recorded source in fp32 if that still exists (`QuantizedMismatch.source`).
Written tensor by tensor from the memory-mapped source: peak RAM is one tensor, not the model.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError

QUANT_METHOD = "coda-int8"
FORMAT_VERSION = 1
SKIP_KEYS = ("quantization_config", "torch_dtype")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt",
                   "added_tokens.json", "generation_config.json")


class QuantizedMismatch(ModelLoadError):
    """A quantized directory whose weights were made from another model than its config describes."""

    def __init__(self, message: str, source: Optional[Path]) -> None:
        super().__init__(message)
        self.source = source


def fingerprint(config_json: dict) -> str:
    """sha256 of config.json without the fields quantizing changes (canonical JSON)."""
    body = {k: v for k, v in config_json.items() if k not in SKIP_KEYS}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


def quantization_config(path: Path) -> Optional[dict]:
    try:
        data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    q = data.get("quantization_config") if isinstance(data, dict) else None
    return q if isinstance(q, dict) else None


def check_quantized_dir(path: Path, config: CodaConfig) -> bool:
    """True for a valid coda-int8 directory, False for an ordinary one; QuantizedMismatch / ModelLoadError else."""
    q = quantization_config(path)
    if q is None:
        return False
    if q.get("quant_method") != QUANT_METHOD or q.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"{path}: quantization {q.get('quant_method')!r} v{q.get('format_version')} is not "
                             f"supported (this version reads {QUANT_METHOD} v{FORMAT_VERSION}): quantize the source again")
    data = json.loads((path / "config.json").read_text(encoding="utf-8"))
    source = Path(q["source"]) if isinstance(q.get("source"), str) else None
    if fingerprint(data) != q.get("source_fingerprint"):
        raise QuantizedMismatch(f"{path}: its int8 weights were made from another model than its config.json describes: "
                                f"run `coda-lsp quantize SRC {path}` again", source)
    return True


def write_quantized(src: Path, dst: Path, max_shard_bytes: int = 1 << 30) -> dict:
    """Write DST, the int8 copy of the model directory SRC; returns {tensors, int8_bytes, float_bytes, shards}."""
    from safetensors.torch import save_file

    from coda_model.weights import INDEX_NAME, WEIGHTS_NAME, WeightReader, atomic_write, read_config
    from coda_model.int8 import int8_modules
    from coda_model.network import CodaLM
    src, dst = Path(src).resolve(), Path(dst)
    if dst.resolve() == src:
        raise ModelLoadError("quantize: DST must differ from SRC")
    family, config = read_config(src)
    if family.name != "coda":
        raise ModelLoadError(f"quantize: {family.label} directories are not supported yet (CoDA only): "
                             "load the source with --quantize int8 instead")
    if quantization_config(src) is not None:
        raise ModelLoadError(f"{src} is already quantized: quantize its source model instead")
    with torch.device("meta"):
        model = CodaLM(config)
    int8 = {name + ".weight" for name, _ in int8_modules(model)}
    names = list(model.state_dict())
    if config.tie_word_embeddings and "lm_head.weight" not in names:
        names.append("lm_head.weight")
    reader = WeightReader(src, family)
    dst.mkdir(parents=True, exist_ok=True)
    for old in [dst / "config.json", ]:   # until the new config is written last, DST is not a loadable model
        old.unlink(missing_ok=True)
    for old in [*dst.glob("model-*-of-*.safetensors"), dst / WEIGHTS_NAME, dst / INDEX_NAME]:
        old.unlink(missing_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    stats = {"tensors": 0, "int8_bytes": 0, "float_bytes": 0}
    try:
        for name in sorted(names, key=lambda n: str(reader.file_of(n if reader.has(n) else "model.embed_tokens.weight"))):
            source = name if reader.has(name) else "model.embed_tokens.weight"   # tied head: its own int8 copy
            if name in int8:
                q, scale = reader.int8(source)
                part = {name: q, name + "_scale": scale}
                stats["int8_bytes"] += q.numel()
            else:
                part = {name: reader.get(source).float()}
                stats["float_bytes"] += part[name].numel() * 4
            nbytes = sum(t.numel() * t.element_size() for t in part.values())
            if shards[-1] and size + nbytes > max_shard_bytes:
                _write_shard(dst, len(shards), shards[-1])    # written now, so RAM holds one shard at most
                shards.append({})
                size = 0
            shards[-1].update(part)
            size += nbytes
            stats["tensors"] += 1
    finally:
        reader.close()
    weight_map = {}
    if len(shards) == 1:
        atomic_write(dst / WEIGHTS_NAME, lambda tmp: save_file(shards[0], tmp, metadata={"format": "pt"}))
    else:
        _write_shard(dst, len(shards), shards[-1])
        total = len(shards)
        for i in range(1, total + 1):   # shards were written as "-of-?????": name them now that the count is known
            part = dst / f"model-{i:05d}-of-XXXXX.safetensors"
            final = dst / f"model-{i:05d}-of-{total:05d}.safetensors"
            part.replace(final)
            from safetensors import safe_open
            with safe_open(str(final), framework="pt") as f:
                weight_map.update({k: final.name for k in f.keys()})
        index = {"metadata": {"format": QUANT_METHOD}, "weight_map": dict(sorted(weight_map.items()))}
        atomic_write(dst / INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2) + "\n"))
    for fname in TOKENIZER_FILES:
        if (src / fname).is_file():
            shutil.copyfile(src / fname, dst / fname)
    data = json.loads((src / "config.json").read_text(encoding="utf-8"))
    data["tie_word_embeddings"] = False      # the head has its own int8 tensor
    from coda_model.int8 import weight_qmax
    data["quantization_config"] = {"quant_method": QUANT_METHOD, "format_version": FORMAT_VERSION, "source": str(src),
                                   "weight_qmax": weight_qmax()}   # a CPU without VNNI re-quantizes 127 to 63
    data["quantization_config"]["source_fingerprint"] = fingerprint(data)
    atomic_write(dst / "config.json", lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2) + "\n"))
    return {**stats, "shards": len(shards)}


def _write_shard(dst: Path, index: int, tensors: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from coda_model.weights import atomic_write
    atomic_write(dst / f"model-{index:05d}-of-XXXXX.safetensors", lambda tmp: save_file(tensors, tmp, metadata={"format": "pt"}))
    tensors.clear()
