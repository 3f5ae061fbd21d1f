"""The CoDA network: a Qwen3 decoder stack run with bidirectional attention.

Architecture only (no I/O, tokenization or sampling). Key names match the released Hugging Face
checkpoint (`model.layers.{i}.self_attn.q_proj.weight`, ..., `lm_head.weight`) so its state dict loads
1:1. Per layer: pre-norm attention with per-head q/k RMSNorm *before* RoPE, GQA, then a SwiGLU MLP.

Logits come back *unshifted*: for CoDA and Dream the output at position j-1 is the distribution of
token j (`config.logit_shift`, the AR convention), for LLaDA the output at j. `shift_logits` aligns
shifted logits with the positions they predict. Other families reuse this one network through flags
(`qkv_bias`, `qk_norm`, `tie_word_embeddings`; see coda_model.families).

Extras the engine and trainer need, all optional:
- `causal=True` runs the same weights as an autoregressive model (parity with Qwen3, AR warm-up, the
  AR baseline);
- `attention_mask`: a key padding mask [B, S] or a full boolean mask broadcastable to [B, 1, L, S];
- `past_key_values`: per-layer (k, v) of context tokens (already RoPE-rotated) that the input attends
  to in addition to itself — the building block of the prefix / dual caches and the AR KV cache;
- `logits_index`: compute `lm_head` only at these positions (the head dominates small models).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from coda_model.config import CodaConfig

KeyValue = tuple[torch.Tensor, torch.Tensor]  # each [B, H_kv, S, head_dim]


class CodaOutput(NamedTuple):
    logits: torch.Tensor  # [B, L or K, V], unshifted
    key_values: Optional[list[KeyValue]]  # per layer, for the input tokens only (when use_cache)


class RMSNorm(nn.Module):
    """Qwen3 RMSNorm: normalise in fp32, cast back, then scale (no +1 offset)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(dtype)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin for rotate-half RoPE, computed in fp32. positions: [B, L] -> each [B, 1, L, head_dim]."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq  # [B, L, D/2]
    emb = torch.cat((freqs, freqs), dim=-1)[:, None]  # [B, 1, L, D]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, cfg: CodaConfig) -> None:
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        d, bias, qkv_bias = cfg.hidden_size, cfg.attention_bias, cfg.attention_bias or cfg.qkv_bias
        self.q_proj = nn.Linear(d, self.num_heads * self.head_dim, bias=qkv_bias)
        self.k_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.v_proj = nn.Linear(d, self.num_kv_heads * self.head_dim, bias=qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, d, bias=bias)
        # Qwen3 / CoDA normalise each head's q and k; Qwen2.5 (Dream) and LLaMA (LLaDA) do not.
        self.q_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, cfg.rms_norm_eps) if cfg.qk_norm else nn.Identity()

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, mask: Optional[torch.Tensor],
                is_causal: bool, past: Optional[KeyValue]) -> tuple[torch.Tensor, KeyValue]:
        b, n, _ = x.shape  # x: [B, L, D]
        q = self.q_norm(self.q_proj(x).view(b, n, self.num_heads, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)  # [B, H, L, hd]
        new_kv = (k, v)
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             enable_gqa=self.num_heads != self.num_kv_heads)
        return self.o_proj(out.transpose(1, 2).reshape(b, n, -1)), new_kv


class MLP(nn.Module):
    def __init__(self, cfg: CodaConfig) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.up_proj = nn.Linear(cfg.hidden_size, cfg.intermediate_size, bias=False)
        self.down_proj = nn.Linear(cfg.intermediate_size, cfg.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, cfg: CodaConfig) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MLP(cfg)

    def forward(self, x, cos, sin, mask, is_causal, past):
        attn, kv = self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal, past)
        h = x + attn
        return h + self.mlp(self.post_attention_layernorm(h)), kv


class CodaBackbone(nn.Module):
    """`model.*` in the checkpoint: embeddings, decoder layers, final norm."""

    def __init__(self, cfg: CodaConfig) -> None:
        super().__init__()
        # padding_idx freezes the pad row's gradient, as in CoDA training (spec 2.2.5).
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def build_attention_mask(attention_mask: Optional[torch.Tensor], causal: bool, q_len: int, past_len: int,
                         device: torch.device) -> tuple[Optional[torch.Tensor], bool]:
    """Turn the caller's mask options into SDPA's (attn_mask, is_causal). True = may attend."""
    mask = attention_mask
    if mask is not None and mask.dim() == 2:  # key padding [B, S] -> [B, 1, 1, S]
        mask = mask[:, None, None, :].bool()
    if not causal:
        return mask, False
    if mask is None and past_len == 0:
        return None, True  # SDPA's own (top-left aligned) causal path
    # Causal with a cache: query i sits at absolute position past_len + i.
    q_pos = torch.arange(q_len, device=device)[:, None] + past_len
    causal_mask = torch.arange(past_len + q_len, device=device)[None, :] <= q_pos  # [L, S]
    return (causal_mask if mask is None else mask & causal_mask), False


class CodaLM(nn.Module):
    """CoDA language model: backbone + `lm_head` (untied for CoDA)."""

    def __init__(self, cfg: CodaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.model = CodaBackbone(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.gradient_checkpointing = False  # set by the trainer; only active in training mode

    def forward(self, input_ids: torch.Tensor, *, position_ids: Optional[torch.Tensor] = None,
                attention_mask: Optional[torch.Tensor] = None, causal: bool = False,
                past_key_values: Optional[list[KeyValue]] = None, use_cache: bool = False,
                logits_index: Optional[torch.Tensor] = None, return_hidden: bool = False) -> CodaOutput:
        """input_ids: [B, L]. position_ids default to past_len + arange(L).

        logits_index: [K] or [B, K] positions (within the input) to compute logits at.
        return_hidden: return the final normed hidden states [B, L, D] in place of logits.
        """
        b, n = input_ids.shape
        past_len = past_key_values[0][0].shape[2] if past_key_values else 0
        if position_ids is None:
            position_ids = torch.arange(past_len, past_len + n, device=input_ids.device).expand(b, n)
        x = self.model.embed_tokens(input_ids)  # [B, L, D]
        cos, sin = rope_tables(position_ids, self.config.head_dim, self.config.rope_theta, x.dtype)
        mask, is_causal = build_attention_mask(attention_mask, causal, n, past_len, x.device)
        new_kv: list[KeyValue] = []
        for i, layer in enumerate(self.model.layers):
            past = past_key_values[i] if past_key_values else None
            if self.gradient_checkpointing and self.training:
                x, kv = checkpoint(layer, x, cos, sin, mask, is_causal, past, use_reentrant=False)
            else:
                x, kv = layer(x, cos, sin, mask, is_causal, past)
            if use_cache:
                new_kv.append(kv)
        x = self.model.norm(x)
        if return_hidden:
            return CodaOutput(x, new_kv if use_cache else None)
        if logits_index is not None:
            if logits_index.dim() == 1:
                x = x[:, logits_index]
            else:
                x = torch.gather(x, 1, logits_index[..., None].expand(-1, -1, x.shape[-1]))
        return CodaOutput(self.lm_head(x), new_kv if use_cache else None)


def shift_logits(logits: torch.Tensor) -> torch.Tensor:
    """Align logits with the token they predict: out[:, j] = logits[:, j-1], out[:, 0] = logits[:, 0]."""
    return torch.cat((logits[:, :1], logits[:, :-1]), dim=1)


def segment_attention_mask(segment_ids: torch.Tensor) -> torch.Tensor:
    """[B, L] document ids -> [B, 1, L, L] boolean mask keeping attention inside each document."""
    return (segment_ids[:, :, None] == segment_ids[:, None, :])[:, None]


def init_weights(model: CodaLM, std: float = 0.02, seed: Optional[int] = None) -> None:
    """Random init for training from scratch: N(0, std) for linear/embedding weights, ones for norms."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            with torch.no_grad():
                w = torch.empty(module.weight.shape, dtype=torch.float32).normal_(0.0, std, generator=gen)
                module.weight.copy_(w.to(module.weight.dtype))
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
