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


def load_sharp(path: str | Path, factor: float = 60.0):
    """A random model loaded (CPU, fp32) with its head scaled up: peaked distributions, so greedy decodes
    have no near-ties that float noise (padding, batching, caches) could flip."""
    from coda_model.checkpoint import load_model
    lm = load_model(path, device="cpu", dtype="float32")
    with torch.no_grad():
        lm.model.lm_head.weight.mul_(factor)
    return lm


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


def family_config_json(family: str, cfg: CodaConfig) -> dict[str, Any]:
    """`cfg`'s shape written the way the family's own checkpoints write config.json (see coda_model.families)."""
    if family == "dream":
        return {"architectures": ["DreamModel"], "model_type": "Dream",
                "auto_map": {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"},
                "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "intermediate_size": cfg.intermediate_size,
                "num_hidden_layers": cfg.num_hidden_layers, "num_attention_heads": cfg.num_attention_heads,
                "num_key_value_heads": cfg.num_key_value_heads, "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps,
                "rope_theta": cfg.rope_theta, "rope_scaling": None, "max_position_embeddings": cfg.max_position_embeddings,
                "mask_token_id": cfg.mask_token_id, "pad_token_id": cfg.pad_token_id, "bos_token_id": cfg.bos_token_id,
                "eos_token_id": cfg.eos_token_id, "tie_word_embeddings": cfg.tie_word_embeddings,
                "use_sliding_window": False, "sliding_window": None, "max_window_layers": cfg.num_hidden_layers,
                "attention_dropout": 0.0, "use_cache": False, "torch_dtype": "float32"}
    if family == "llada":
        return {"architectures": ["LLaDAModelLM"], "model_type": "llada",
                "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                             "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM"},
                "d_model": cfg.hidden_size, "n_layers": cfg.num_hidden_layers, "n_heads": cfg.num_attention_heads,
                "n_kv_heads": cfg.num_key_value_heads, "mlp_hidden_size": cfg.intermediate_size, "mlp_ratio": 4,
                "embedding_size": cfg.vocab_size, "vocab_size": cfg.vocab_size, "max_sequence_length": cfg.max_position_embeddings,
                "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta, "rope": True, "rope_full_precision": True,
                "alibi": False, "block_type": "llama", "layer_norm_type": "rms", "layer_norm_with_affine": True,
                "activation_type": "silu", "include_bias": False, "include_qkv_bias": False, "bias_for_layer_norm": False,
                "attention_layer_norm": False, "scale_logits": False, "input_emb_norm": False, "block_group_size": 1,
                "weight_tying": cfg.tie_word_embeddings, "mask_token_id": cfg.mask_token_id,
                "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id, "precision": "amp_bf16"}
    raise ValueError(f"no layout writer for family {family!r}")


def write_random_family_dir(out: str | Path, source: str | Path, family: str, *, seed: int = 0,
                            **overrides: Any) -> Path:
    """A tiny random model in another family's on-disk layout (config fields, tensor names), with `source`'s
    tokenizer: what a Dream or LLaDA download looks like to the loader, at test size."""
    from safetensors.torch import save_file

    from coda_model.families import FAMILIES

    out = Path(out)
    write_random_coda_dir(out, source, seed=seed, num_shards=1)  # tokenizer files + a CoDA config to start from
    base = json.loads((out / "config.json").read_text())
    flags = {"dream": dict(qkv_bias=True, qk_norm=False), "llada": dict(qk_norm=False, logit_shift=False,
                                                                          rope_theta=500_000.0, rms_norm_eps=1e-5)}[family]
    cfg = CodaConfig.from_dict({**base, **flags, "family": family, **overrides})
    torch.manual_seed(seed)
    model = CodaLM(cfg)
    init_weights(model, seed=seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.02)
    name_of = FAMILIES[family].checkpoint_name
    state = {name_of(k): v.detach().contiguous() for k, v in model.state_dict().items()
             if not (cfg.tie_word_embeddings and k == "lm_head.weight")}
    (out / "model.safetensors").unlink()
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(family_config_json(family, cfg), indent=2) + "\n")
    return out
