"""`coda-train export`: a training checkpoint -> a Hugging Face CoDA directory.

The output is what `coda-lsp --model DIR` and `coda_model.checkpoint.load_model` load, and also what
`transformers`' `Qwen3ForCausalLM.from_pretrained(DIR)` loads (untied head, Qwen3 key names; run it with
a non-causal mask and shift the logits to use it as a diffusion model). The run's masking curriculum is
written into config.json as CoDA's released config does (training-only fields, spec 2.1).

    coda-train export runs/tiny-sft --out runs/tiny-sft-hf --dtype bfloat16
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from coda_model.checkpoint import load_model, save_model
from coda_train.checkpointing import CheckpointError, find_checkpoint

CURRICULUM_KEYS = ("sampling_eps", "block_masking_probability", "mask_block_sizes", "prefix_probability",
                   "truncate_probability")


def export(src: str | Path, out: str | Path, *, dtype: str = "float32", max_shard_bytes: int = 5 * 1024**3) -> Path:
    """Export the newest intact checkpoint of run `src` (or checkpoint dir `src`) to `out`."""
    ckpt = find_checkpoint(src)
    if ckpt is None:
        raise CheckpointError(f"{src} has no intact checkpoint to export: train first (coda-train pretrain ...)")
    loaded = load_model(ckpt, device="cpu", dtype="float32")
    config = loaded.config
    trainer = json.loads((ckpt / "trainer.json").read_text()) if (ckpt / "trainer.json").is_file() else {}
    objective = trainer.get("config", {}).get("objective", {})
    for key in CURRICULUM_KEYS:
        if key in objective:
            config.extra[key] = objective[key]
    if objective.get("kind") == "ar":
        config.extra["training_objective"] = "ar"  # trained causally: an AR baseline, not a diffusion model
    config.extra.setdefault("architectures", ["CoDALanguageModel"])
    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    save_model(loaded.model, out, tokenizer=loaded.tokenizer, dtype=dt, max_shard_bytes=max_shard_bytes)
    load_model(out, device="cpu", dtype="float32")  # refuse to report success for a directory that does not load
    return Path(out)
