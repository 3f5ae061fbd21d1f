"""Build the model and tokenizer a run starts from (`[model]` section), with checks before any compute.

`model.init = "random"` makes a fresh CoDA network of the preset shape whose vocabulary and special ids
come from `model.tokenizer`; any other value is a path to a Hugging Face CoDA directory (e.g. the output
of `coda-train adapt` or `export`), a checkpoint directory, or a run directory (its newest intact
checkpoint) — the way mid-training starts from pre-training and SFT from mid-training (weights only).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from coda_model.checkpoint import load_model
from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError
from coda_model.network import CodaLM, init_weights
from coda_model.tokenizer import CodaTokenizer
from coda_train.checkpointing import CheckpointError, find_checkpoint, list_checkpoints
from coda_train.config import ConfigError, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings")


@dataclass
class Built:
    model: CodaLM
    config: CodaConfig
    tokenizer: CodaTokenizer
    source: str  # where the weights came from


def resolve_init_dir(init: str) -> Path:
    """A run dir -> its newest intact checkpoint; a checkpoint or HF dir -> itself."""
    path = Path(init).expanduser()
    if not path.is_dir():
        raise ConfigError(f"model.init = {init!r}: no such directory (use \"random\" or a CoDA model / run directory)")
    if list_checkpoints(path):
        ckpt = find_checkpoint(path)
        if ckpt is None:
            raise CheckpointError(f"{path} has no intact checkpoint to start from")
        return ckpt
    return path


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple if multiple > 1 else n


def random_config(cfg: ModelConfig, tok: CodaTokenizer) -> CodaConfig:
    base = CodaConfig.tiny() if cfg.preset == "tiny" else CodaConfig.coda_1p7b()
    data = base.to_dict()
    for name in SHAPE_FIELDS:
        if getattr(cfg, name) is not None:
            data[name] = getattr(cfg, name)
    vocab = cfg.vocab_size or round_up(tok.vocab_size, cfg.vocab_multiple)
    if vocab < tok.vocab_size:
        raise ConfigError(f"model.vocab_size={vocab} is below the tokenizer's {tok.vocab_size} ids")
    data.update(vocab_size=vocab, mask_token_id=tok.mask_id,
                pad_token_id=tok.pad_id, bos_token_id=tok.pad_id, eos_token_id=tok.eos_id)
    try:
        return CodaConfig.from_dict(data)
    except ValueError as exc:
        raise ConfigError(f"[model] shape is invalid: {exc}") from exc


def build_model(cfg: ModelConfig, seed: int) -> Built:
    """Model in `cfg.dtype` on the CPU (the back-end places it)."""
    if cfg.init == "random":
        if not cfg.tokenizer:
            raise ConfigError("model.tokenizer is required with model.init = \"random\" (a tokenizer directory)")
        try:
            tok = CodaTokenizer.from_dir(cfg.tokenizer)
        except ModelLoadError as exc:
            raise ConfigError(f"model.tokenizer: {exc}") from exc
        config = random_config(cfg, tok)
        torch.manual_seed(seed)
        model = CodaLM(config)
        init_weights(model, std=cfg.init_std, seed=seed)
        source = "random"
    else:
        ignored = [f"model.{n}" for n in SHAPE_FIELDS + ("vocab_size",) if getattr(cfg, n) is not None]
        if ignored:
            warnings.warn(f"{', '.join(ignored)} ignored: the shape comes from model.init = {cfg.init}", stacklevel=2)
        path = resolve_init_dir(cfg.init)
        loaded = load_model(path, device="cpu", dtype="float32")
        model, config, tok = loaded.model, loaded.config, loaded.tokenizer
        if cfg.tokenizer:
            tok = CodaTokenizer.from_dir(cfg.tokenizer)
            if tok.vocab_size > config.vocab_size or tok.mask_id != config.mask_token_id:
                raise ConfigError(f"model.tokenizer {cfg.tokenizer} does not match the model in {path}")
        source = str(path)
    model = model.to(DTYPES[cfg.dtype])
    model.gradient_checkpointing = cfg.gradient_checkpointing
    model.train()
    return Built(model=model, config=config, tokenizer=tok, source=source)
