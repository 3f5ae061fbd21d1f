"""Small real inputs for tests and benchmarks: a CoDA-style tokenizer, text and SFT shards, tiny configs.

Everything is built from files that exist on any Python install (the standard library's sources), so the
whole pretrain -> midtrain -> SFT -> export chain runs offline in seconds.
"""

from __future__ import annotations

import json
import sysconfig
from pathlib import Path
from typing import Any

from coda_train.config import TrainConfig, apply_overrides, config_from_dict
from coda_train.data import write_shards
from coda_train.tokenizer_train import train_tokenizer_dir


def stdlib_dirs(*names: str) -> list[str]:
    """Directories of the running Python's standard library (e.g. 'json', 'email')."""
    root = Path(sysconfig.get_paths()["stdlib"])
    return [str(root / n) for n in names if (root / n).is_dir()]


def make_tokenizer(out: str | Path, vocab_size: int = 512) -> Path:
    return train_tokenizer_dir(out, stdlib_dirs("json"), vocab_size=vocab_size, suffixes=(".py",))


def make_text_shards(out: str | Path, tokenizer: str | Path, names: tuple[str, ...] = ("json",),
                     shard_tokens: int = 1 << 24) -> Path:
    write_shards(stdlib_dirs(*names), tokenizer, out, kind="text", shard_tokens=shard_tokens, suffixes=(".py",),
                 progress=False)
    return Path(out)


def make_sft_shards(out: str | Path, tokenizer: str | Path, num_examples: int = 64) -> Path:
    """Tiny instruction data: 'what does f return' -> the function body, from stdlib json functions."""
    import ast  # noqa: PLC0415

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for src in sorted(Path(stdlib_dirs("json")[0]).glob("*.py")):
        tree = ast.parse(src.read_text(encoding="utf-8"))
        text = src.read_text(encoding="utf-8")
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                body = ast.get_source_segment(text, node) or ""
                records.append({"instruction": f"Write the function {node.name}.", "output": body[:200]})
    records = (records * (num_examples // max(1, len(records)) + 1))[:num_examples]
    jsonl = out.parent / f"{out.name}.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    write_shards([str(jsonl)], tokenizer, out, kind="sft", progress=False)
    return out


def tiny_config(tokenizer: str | Path, data_dir: str | Path, out_dir: str | Path, /, **sections: dict[str, Any]) -> TrainConfig:
    """A 2-layer, hidden-32 model on 64-token rows: a step takes milliseconds on a CPU core."""
    base: dict[str, Any] = {
        "model": {"init": "random", "tokenizer": str(tokenizer), "hidden_size": 32, "intermediate_size": 64,
                  "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
                  "max_position_embeddings": 256},
        "data": {"train": [str(data_dir)], "seq_len": 64},
        "objective": {"kind": "diffusion"},
        "optim": {"name": "adamw", "lr": 3e-3, "schedule": "constant", "grad_clip": 1.0},
        "run": {"out_dir": str(out_dir), "steps": 20, "batch_size": 4, "log_every": 5, "progress": False,
                "device": "cpu", "tensorboard": False, "threads": 1},
    }
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    if base["model"].get("init", "random") != "random":  # the shape comes from the init directory
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "max_position_embeddings"):
            if key not in sections.get("model", {}):
                base["model"].pop(key, None)
    return config_from_dict(apply_overrides(base, []))
