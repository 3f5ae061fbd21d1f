"""Model families: small named adapters from a checkpoint's own layout onto our one network.

Each supported masked-diffusion family differs from CoDA only in config field names, tensor names,
special-token ids and a few architecture flags (q/k/v biases, per-head q/k RMSNorm, whether the logit at
j-1 or at j predicts token j, tied embeddings). An adapter turns the family's `config.json` into a
`CodaConfig` with those flags set and maps our tensor names to the checkpoint's, so the released files
load unchanged and the engine decodes them as it decodes CoDA. Torch-free (the catalog imports it).

Layouts, as published:
- CoDA (Salesforce/CoDA-v0-*): Qwen3 blocks (q/k RMSNorm, no biases), untied head, logits shifted.
- Dream (Dream-org/Dream-v0-*-7B, Dream-org/Dream-Coder-v0-*, apple/DiffuCoder-7B-*): `model_type`
  "Dream", `DreamModel`; Qwen2.5 blocks (q/k/v biases, no o bias, no q/k norm), Qwen2 field and tensor
  names, `mask_token_id` 151666; its `diffusion_generate` shifts logits (`cat([logits[:, :1],
  logits[:, :-1]])`). DiffuCoder ends its answers with `<|dlm_pad|>`, its tokenizer's pad token.
- LLaDA (GSAI-ML/LLaDA-8B-*, LLaDA-1.5): `model_type` "llada", `LLaDAModelLM`, OLMo field names
  (`d_model`, `n_layers`, `n_heads`, `n_kv_heads`, `mlp_hidden_size`, `embedding_size`,
  `max_sequence_length`, `weight_tying`), LLaMA blocks (`block_type` "llama") with OLMo tensor names
  (`model.transformer.blocks.{i}.q_proj`, `attn_out`, `ff_proj` = gate, `up_proj`, `ff_out` = down,
  `attn_norm`, `ff_norm`, `model.transformer.wte` / `ln_f` / `ff_out`); mask id 126336; no logit
  shift (the logit at position j predicts token j).

Sampler defaults, where they matter for infilling: the mask, pad and eos ids come from each family's
config and tokenizer, so a hole ends where that family's models end text (Dream's `<|endoftext|>`,
DiffuCoder's `<|dlm_pad|>`, LLaDA's `<|endoftext|>`). One decode preset serves every family: `entropy`
is the `alg` Dream and DiffuCoder document, LLaDA's `low_confidence` remasking is our `maskgit_plus`,
and its semi-autoregressive blocks are our block decoding. Not applied: Dream-Coder's annealed
`pad_penalty` (its schedule is only described in prose) and DreamOn's `<|expand|>` / `<|delete|>`
variable-length holes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from coda_model.config import CodaConfig
from coda_model.errors import ModelLoadError

SUPPORTED = "CoDA, Dream (Dream-v0, Dream-Coder, DiffuCoder) and LLaDA"
# Diffusion families seen in the wild whose layouts we have not verified: named, then refused.
UNSUPPORTED_DIFFUSION = ("llada_moe", "lladamoe", "llada2_moe", "sdar", "mmada", "dreamon")
VISION_HINTS = ("vision", "llava", "visual", "siglip")


@dataclass(frozen=True)
class Family:
    """One adapter: how a family's config.json and tensor names map onto `CodaConfig` / `CodaLM`."""

    name: str                                      # "coda" | "dream" | "llada"
    label: str                                     # shown by `coda-lsp models`
    to_config: Callable[[dict[str, Any]], CodaConfig]
    checkpoint_name: Callable[[str], str]          # our tensor name -> the name in the family's files


def _same(name: str) -> str:
    return name


def _ids(value: Any) -> Optional[int]:
    """An id field that may be a list (several eos ids): its first entry."""
    if isinstance(value, list):
        return int(value[0]) if value else None
    return None if value is None else int(value)


def coda_config(data: dict[str, Any]) -> CodaConfig:
    return CodaConfig.from_qwen_dict(data, family="coda")


def dream_config(data: dict[str, Any]) -> CodaConfig:
    if data.get("use_sliding_window"):
        raise ModelLoadError("this Dream checkpoint uses sliding-window attention, which coda-lsp does not implement")
    heads = int(data.get("num_attention_heads") or 1)
    return CodaConfig.from_qwen_dict(
        data, family="dream", model_type="Dream", qkv_bias=True, qk_norm=False, logit_shift=True, attention_bias=False,
        head_dim=data.get("head_dim") or int(data.get("hidden_size", 0)) // heads,
        num_key_value_heads=data.get("num_key_value_heads") or heads,
        eos_token_id=_ids(data.get("eos_token_id")), pad_token_id=_ids(data.get("pad_token_id")),
        bos_token_id=_ids(data.get("bos_token_id")), tie_word_embeddings=bool(data.get("tie_word_embeddings", False)))


# LLaDA config values our LLaMA block reproduces; anything else is refused by name.
_LLADA_REQUIRED = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "alibi": False,
                   "rope": True, "include_bias": False, "attention_layer_norm": False, "scale_logits": False,
                   "input_emb_norm": False, "block_group_size": 1}


def llada_config(data: dict[str, Any]) -> CodaConfig:
    for key, want in _LLADA_REQUIRED.items():
        if key in data and data[key] != want:
            raise ModelLoadError(f"this LLaDA checkpoint has {key}={data[key]!r}; coda-lsp supports only {key}={want!r}")
    missing = [k for k in ("d_model", "n_layers", "n_heads") if k not in data]
    if missing:
        raise ModelLoadError(f"config.json lacks {', '.join(missing)}: it is not a LLaDA config")
    d, heads = int(data["d_model"]), int(data["n_heads"])
    kv = 1 if data.get("multi_query_attention") else (data.get("n_kv_heads") or heads)
    mlp = data.get("mlp_hidden_size") or int(data.get("mlp_ratio", 4)) * d
    return CodaConfig.from_qwen_dict(
        data, family="llada", model_type="llada", qk_norm=False, logit_shift=False, attention_bias=False,
        qkv_bias=bool(data.get("include_qkv_bias", False)), tie_word_embeddings=bool(data.get("weight_tying", False)),
        vocab_size=data.get("embedding_size") or data["vocab_size"], hidden_size=d, intermediate_size=mlp,
        num_hidden_layers=data["n_layers"], num_attention_heads=heads, num_key_value_heads=kv, head_dim=d // heads,
        rms_norm_eps=data.get("rms_norm_eps", 1e-5), rope_theta=data.get("rope_theta", 10_000.0),
        max_position_embeddings=data.get("max_sequence_length"), hidden_act="silu",
        mask_token_id=data.get("mask_token_id", 126336), eos_token_id=_ids(data.get("eos_token_id")),
        pad_token_id=_ids(data.get("pad_token_id")), bos_token_id=_ids(data.get("bos_token_id")))


_LLADA_LAYER = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ff_norm", "self_attn.q_proj": "q_proj",
                "self_attn.k_proj": "k_proj", "self_attn.v_proj": "v_proj", "self_attn.o_proj": "attn_out",
                "mlp.gate_proj": "ff_proj", "mlp.up_proj": "up_proj", "mlp.down_proj": "ff_out"}
_LLADA_TOP = {"model.embed_tokens.weight": "model.transformer.wte.weight", "model.norm.weight": "model.transformer.ln_f.weight",
              "lm_head.weight": "model.transformer.ff_out.weight"}


def llada_name(name: str) -> str:
    """`model.layers.3.self_attn.o_proj.weight` -> `model.transformer.blocks.3.attn_out.weight`."""
    if name in _LLADA_TOP:
        return _LLADA_TOP[name]
    _, _, index, rest = name.split(".", 3)  # model.layers.{i}.{module}.{weight|bias}
    module, _, leaf = rest.rpartition(".")
    return f"model.transformer.blocks.{index}.{_LLADA_LAYER[module]}.{leaf}"


FAMILIES = {
    "coda": Family("coda", "CoDA", coda_config, _same),
    "dream": Family("dream", "Dream", dream_config, _same),
    "llada": Family("llada", "LLaDA", llada_config, llada_name),
}


def _describe(data: dict[str, Any]) -> str:
    archs = data.get("architectures") or []
    return f"model_type {data.get('model_type')!r}" + (f", architectures {', '.join(map(str, archs))}" if archs else "")


def detect_family(data: dict[str, Any], path: Path | str = "config.json") -> Family:
    """The adapter for a config.json dict, or a one-line ModelLoadError naming what the model is and what to do."""
    model_type = str(data.get("model_type") or "").lower()
    archs = [str(a) for a in data.get("architectures") or []]
    names = " ".join([model_type, *archs]).lower()
    if "vision_config" in data or re.search(r"(^|_)vl($|_)", model_type) or any(h in names for h in VISION_HINTS):
        raise ModelLoadError(f"{path}: a vision / multimodal model ({_describe(data)}); coda-lsp needs a text "
                             f"masked-diffusion code model ({SUPPORTED})")
    if model_type == "coda" or "CoDALanguageModel" in archs or (not model_type and not archs):
        return FAMILIES["coda"]
    if model_type == "dream" or "DreamModel" in archs:
        return FAMILIES["dream"]
    if model_type == "llada" or "LLaDAModelLM" in archs:
        return FAMILIES["llada"]
    diffusion = (model_type in UNSUPPORTED_DIFFUSION or "mask_token_id" in data
                 or any(k in names for k in ("llada", "dream", "diffusion", "sdar", "mdm")))
    if diffusion:
        raise ModelLoadError(f"{path}: a diffusion model of a family coda-lsp does not support ({_describe(data)}); "
                             f"supported: {SUPPORTED}")
    if model_type == "qwen3":
        raise ModelLoadError(f"{path}: an autoregressive Qwen3 checkpoint (no mask token); turn it into a diffusion "
                             "model first: coda-train adapt --from DIR --out NEW_DIR, then train it (see README)")
    if model_type or any(a.endswith("ForCausalLM") for a in archs):
        raise ModelLoadError(f"{path}: an autoregressive model ({_describe(data)}, no mask token); coda-lsp decodes "
                             f"masked-diffusion code models ({SUPPORTED}); coda-train adapt converts Qwen3 checkpoints only")
    raise ModelLoadError(f"{path}: unknown model ({_describe(data)}); supported: {SUPPORTED}")
