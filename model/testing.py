"""Builders for small random-weight CoDA directories (tests, benchmarks, docs).

`write_random_coda_dir` takes the real CoDA config and tokenizer from a CoDA directory such as
`shared/coda-v0/`, scales the network down, and writes real (sharded) safetensors with the real key
names, so every loading path users hit runs in tests.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from coda_model.checkpoint import save_model
from coda_model.config import CodaConfig
from coda_model.network import CodaLM, init_weights
from coda_model.tokenizer import CodaTokenizer, build_bpe_from_vocab_merges

TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "generation_config.json")


def find_shared_coda_dir(start: Optional[Path] = None) -> Optional[Path]:
    """Locate `shared/coda-v0` beside the checkout (CI layout: ../shared next to the repo)."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        for cand in (parent / "shared" / "coda-v0", parent.parent / "shared" / "coda-v0"):
            if (cand / "vocab.json").is_file():
                return cand
    return None


def write_random_coda_dir(out: str | Path, source: str | Path, *, seed: int = 0, num_shards: int = 2,
                          dtype: torch.dtype = torch.float32, **overrides: Any) -> Path:
    """Write a random-weight CoDA directory: `source`'s config scaled down by `overrides`, its tokenizer
    files copied, and `tokenizer.json` assembled from vocab.json + merges.txt with `tokenizers`."""
    out, source = Path(out), Path(source)
    out.mkdir(parents=True, exist_ok=True)
    data = json.loads((source / "config.json").read_text())
    base = CodaConfig.tiny().to_dict()
    for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "head_dim", "max_position_embeddings"):
        data[key] = base[key]
    data.update(overrides)
    config = CodaConfig.from_dict(data)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)
    tok = build_bpe_from_vocab_merges(source / "vocab.json", source / "merges.txt")
    tok.save(str(out / "tokenizer.json"))
    CodaTokenizer.from_dir(out).tok.save(str(out / "tokenizer.json"))  # now with the added tokens
    torch.manual_seed(seed)
    model = CodaLM(config)
    init_weights(model, seed=seed)
    total = sum(p.numel() * torch.finfo(dtype).bits // 8 for p in model.state_dict().values())
    save_model(model, out, dtype=dtype, max_shard_bytes=max(1, total // num_shards + 1) if num_shards > 1 else total + 1)
    return out
