"""CoDA model configuration: the Hugging Face `config.json` fields, as a dataclass.

The released CoDA config (Qwen3 fields plus CoDA extras such as `mask_token_id` and the
training-only masking curriculum) round-trips through `from_dict` / `to_dict`: fields we do not
model are kept in `extra` so a saved directory carries everything it was loaded with.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coda_model.errors import ModelLoadError, read_json_object


QWEN_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
# Set by the family adapters from each family's own fields; a CoDA config.json never carries them.
FAMILY_FLAGS = ("family", "qkv_bias", "qk_norm", "logit_shift")


@dataclass
class CodaConfig:
    vocab_size: int = 151936  # embedding rows (tokenizer may define fewer ids)
    hidden_size: int = 2048  # model width
    intermediate_size: int = 6144  # SwiGLU inner width
    num_hidden_layers: int = 28
    num_attention_heads: int = 16  # query heads
    num_key_value_heads: int = 8  # GQA: KV heads
    head_dim: int = 128
    hidden_act: str = "silu"
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1_000_000.0
    max_position_embeddings: int = 40960
    attention_bias: bool = False
    mask_token_id: int = 151669  # <|mask|>
    pad_token_id: int = 151643  # <|endoftext|>
    bos_token_id: int = 151643  # CoDAConfig default (not in the released config.json)
    eos_token_id: int = 151645  # <|im_end|>; CoDAConfig default
    torch_dtype: str = "float32"  # dtype the weights are stored in
    model_type: str = "CoDA"
    # Architecture flags that tell the families apart (coda_model.families); CoDA's values by default.
    family: str = "coda"             # adapter that read config.json: coda | dream | llada
    qkv_bias: bool = False           # biases on q/k/v only (Qwen2.5 / Dream); attention_bias = all four (Qwen3)
    qk_norm: bool = True             # per-head RMSNorm on q and k before RoPE (Qwen3 / CoDA)
    logit_shift: bool = True         # the logit at j-1 predicts token j (CoDA, Dream); False: at j (LLaDA)
    tie_word_embeddings: bool = False  # lm_head shares the embedding matrix
    # Everything else from config.json (auto_map, training-only curriculum fields, ...), kept verbatim.
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.num_attention_heads % self.num_key_value_heads:
            problems.append("num_attention_heads must be a multiple of num_key_value_heads")
        for name in ("mask_token_id", "pad_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                problems.append(f"{name}={getattr(self, name)} is outside vocab_size={self.vocab_size}")
        if self.hidden_act != "silu":
            problems.append(f"hidden_act={self.hidden_act!r} is not supported (CoDA uses 'silu')")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def num_parameters(self) -> int:
        """Parameter count of the network this config builds."""
        d, f, h = self.hidden_size, self.intermediate_size, self.head_dim
        q, kv = self.num_attention_heads * h, self.num_key_value_heads * h
        attn = d * q * 2 + d * kv * 2 + 2 * h * self.qk_norm + (q + 2 * kv) * (self.qkv_bias or self.attention_bias)
        layer = attn + 3 * d * f + 2 * d + d * self.attention_bias
        return (1 + (not self.tie_word_embeddings)) * self.vocab_size * d + self.num_hidden_layers * layer + d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CodaConfig":
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names}
        extra.pop("extra", None)
        if known.get("rope_theta") is None and isinstance(data.get("rope_parameters"), dict):
            known["rope_theta"] = data["rope_parameters"].get("rope_theta", cls.rope_theta)
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.extra)
        out.update({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                    if f.name != "extra" and f.name not in FAMILY_FLAGS})
        out.setdefault("architectures", ["CoDALanguageModel"])
        return dict(sorted(out.items()))

    @staticmethod
    def read_json(path: str | Path) -> dict[str, Any]:
        """config.json as a dict, or a ModelLoadError saying the file is missing or broken."""
        path = Path(path)
        if not path.is_file():
            raise ModelLoadError(f"{path} is missing: a CoDA model directory needs config.json (Hugging Face format)")
        return read_json_object(path)

    @classmethod
    def from_json(cls, path: str | Path) -> "CodaConfig":
        return cls.from_qwen_dict(cls.read_json(path), path)

    @classmethod
    def from_qwen_dict(cls, data: dict[str, Any], path: str | Path = "config.json", **overrides: Any) -> "CodaConfig":
        """A config.json with Qwen field names (CoDA, Qwen3, Dream's Qwen2.5), checked for the required fields."""
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
        missing = [k for k in QWEN_REQUIRED if k not in data]
        if missing:
            raise ModelLoadError(f"{path} lacks {', '.join(missing)}: it is not a CoDA/Qwen3 config.json")
        try:
            return cls.from_dict(data)
        except (TypeError, ValueError) as exc:
            raise ModelLoadError(f"{path} is invalid: {exc}") from exc

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n", encoding="utf-8")

    # --- presets -----------------------------------------------------------------------------------------
    @classmethod
    def coda_1p7b(cls) -> "CodaConfig":
        """The released CoDA-v0 shape (Qwen3-1.7B backbone, untied lm_head: 2.03B parameters)."""
        return cls()

    @classmethod
    def tiny(cls, vocab_size: int = 151936, **overrides: Any) -> "CodaConfig":
        """A debug size for tests: real CoDA token ids, a few hundred thousand backbone parameters."""
        base = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096)
        base.update(overrides)
        return cls(**base)
