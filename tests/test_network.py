"""The CoDA network: Qwen3 parity under a causal mask, bidirectionality, logit shift, cache inputs."""

from __future__ import annotations

import pytest
import torch

from coda_model.config import CodaConfig
from coda_model.network import CodaLM, init_weights, segment_attention_mask, shift_logits

transformers = pytest.importorskip("transformers")


def _small_config(**kw) -> CodaConfig:
    base = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, rope_theta=1_000_000.0, mask_token_id=999, pad_token_id=997,
                eos_token_id=998, bos_token_id=997)
    base.update(kw)
    return CodaConfig(**base)


def _hf_twin(cfg: CodaConfig) -> "transformers.Qwen3ForCausalLM":
    hf_cfg = transformers.Qwen3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads, head_dim=cfg.head_dim, rope_theta=cfg.rope_theta,
        rms_norm_eps=cfg.rms_norm_eps, tie_word_embeddings=False, max_position_embeddings=4096,
        pad_token_id=cfg.pad_token_id, attn_implementation="eager")
    torch.manual_seed(1)
    return transformers.Qwen3ForCausalLM(hf_cfg).eval()


def test_causal_forward_matches_transformers_qwen3():
    cfg = _small_config()
    hf = _hf_twin(cfg)
    ours = CodaLM(cfg).eval()
    missing, unexpected = ours.load_state_dict(hf.state_dict(), strict=False)
    assert not missing and not [k for k in unexpected if "rotary" not in k]
    ids = torch.randint(0, cfg.vocab_size, (2, 37), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(input_ids=ids).logits
        got = ours(ids, causal=True).logits
    assert (ref - got).abs().max().item() <= 1e-5


def _random_model(cfg: CodaConfig, seed: int = 0) -> CodaLM:
    model = CodaLM(cfg).eval()
    init_weights(model, seed=seed)
    return model


def test_bidirectional_attention_sees_later_tokens_and_causal_does_not():
    cfg = _small_config()
    model = _random_model(cfg)
    ids = torch.randint(0, 990, (1, 20), generator=torch.Generator().manual_seed(3))
    changed = ids.clone()
    changed[0, 15] = (changed[0, 15] + 1) % 990
    with torch.no_grad():
        bi_a, bi_b = model(ids).logits, model(changed).logits
        ca_a, ca_b = model(ids, causal=True).logits, model(changed, causal=True).logits
    assert (bi_a[0, 5] - bi_b[0, 5]).abs().max() > 1e-4  # position 5 sees position 15
    assert torch.equal(ca_a[0, :15], ca_b[0, :15])  # causal: nothing before 15 moves


def test_shift_logits_makes_position_j_predict_token_j():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    shifted = shift_logits(logits)
    assert torch.equal(shifted[:, 0], logits[:, 0])
    assert torch.equal(shifted[:, 1:], logits[:, :-1])


def test_padding_mask_hides_pad_keys():
    cfg = _small_config()
    model = _random_model(cfg)
    ids = torch.randint(0, 990, (1, 12), generator=torch.Generator().manual_seed(4))
    padded = torch.cat([ids, torch.full((1, 5), cfg.pad_token_id)], dim=1)
    keep = padded != cfg.pad_token_id
    with torch.no_grad():
        plain = model(ids).logits
        masked = model(padded, attention_mask=keep).logits[:, :12]
        unmasked = model(padded).logits[:, :12]
    assert (plain - masked).abs().max() < 1e-5
    assert (plain - unmasked).abs().max() > 1e-4


def test_segment_mask_keeps_documents_apart():
    cfg = _small_config()
    model = _random_model(cfg)
    a = torch.randint(0, 990, (1, 8), generator=torch.Generator().manual_seed(5))
    b = torch.randint(0, 990, (1, 6), generator=torch.Generator().manual_seed(6))
    packed = torch.cat([a, b], dim=1)
    seg = torch.tensor([[0] * 8 + [1] * 6])
    pos = torch.tensor([list(range(8)) + list(range(6))])
    with torch.no_grad():
        alone = model(b).logits
        inside = model(packed, attention_mask=segment_attention_mask(seg), position_ids=pos).logits[:, 8:]
    assert (alone - inside).abs().max() < 1e-5


def test_past_key_values_reproduce_full_forward():
    """Context K/V fed back as `past_key_values` give the same logits as one full pass."""
    cfg = _small_config()
    model = _random_model(cfg)
    ids = torch.randint(0, 990, (2, 16), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        full = model(ids, causal=True).logits
        first = model(ids[:, :10], causal=True, use_cache=True)
        rest = model(ids[:, 10:], causal=True, past_key_values=first.key_values).logits
        bi_full = model(ids).logits
        # bidirectional: the last 6 tokens attending to cached K/V of the first 10 plus themselves
        ctx = model(ids[:, :10], use_cache=True)
        tail = model(ids[:, 10:], past_key_values=ctx.key_values).logits
        # the cached context never saw the tail: the same as one pass where context rows cannot see the tail
        rows, cols = torch.arange(16)[:, None], torch.arange(16)[None, :]
        block = ((rows >= 10) | (cols < 10))[None, None]
        blocked = model(ids, attention_mask=block).logits
    assert (full[:, 10:] - rest).abs().max() < 1e-5
    assert (blocked[:, 10:] - tail).abs().max() < 1e-5
    assert (bi_full[:, 10:] - tail).abs().max() > 1e-5  # and it is an approximation of the exact pass


def test_logits_index_selects_positions():
    cfg = _small_config()
    model = _random_model(cfg)
    ids = torch.randint(0, 990, (2, 9), generator=torch.Generator().manual_seed(8))
    idx = torch.tensor([1, 4, 8])
    with torch.no_grad():
        full = model(ids).logits
        some = model(ids, logits_index=idx).logits
        per_row = model(ids, logits_index=torch.tensor([[0, 2], [5, 7]])).logits
    assert torch.allclose(full[:, idx], some, atol=1e-6)
    assert torch.allclose(per_row[0], full[0, [0, 2]], atol=1e-6) and torch.allclose(per_row[1], full[1, [5, 7]], atol=1e-6)


def test_parameter_count_of_1p7b_preset_matches_released_checkpoint():
    assert CodaConfig.coda_1p7b().num_parameters == 2_031_739_904
    with torch.device("meta"):
        model = CodaLM(CodaConfig.coda_1p7b())
    assert sum(p.numel() for p in model.parameters()) == 2_031_739_904
    assert len(model.state_dict()) == 311
