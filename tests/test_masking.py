"""The noising process: rates, weights, structured masking (S1/S2/S3), SFT prompts, our hole options."""

from __future__ import annotations

import pytest
import torch

from coda_train.masking import (MaskingSettings, SpecialIds, block_sizes, corrupt, fim_rows, noise_batch,
                                progressive_src_mask)

IDS = SpecialIds(mask=99, pad=98, eos=97, fim_prefix=90, fim_middle=91, fim_suffix=92)


def tokens(B=64, L=128, seed=0):
    return torch.randint(0, 90, (B, L), generator=torch.Generator().manual_seed(seed))


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_mask_rate_matches_sigma_in_expectation():
    x = tokens(B=256, L=256)
    nb = noise_batch(x, MaskingSettings(), IDS, gen())
    rate = nb.input_ids.eq(IDS.mask).float().mean(1)
    # per row: the empirical rate is within binomial noise of sigma
    assert torch.all((rate - nb.sigma).abs() < 4 * torch.sqrt(nb.sigma * (1 - nb.sigma) / 256) + 1e-3)
    assert abs(rate.mean().item() - nb.sigma.mean().item()) < 0.01


def test_weights_are_inverse_sigma_and_sigma_respects_eps():
    nb = noise_batch(tokens(B=512, L=16), MaskingSettings(sampling_eps=0.25), IDS, gen(1))
    assert torch.allclose(nb.weights, 1.0 / nb.sigma)
    assert nb.sigma.min() >= 0.25 and nb.sigma.max() <= 1.0
    assert abs(nb.sigma.mean().item() - 0.625) < 0.03  # U[0.25, 1]


def test_loss_positions_are_exactly_the_masked_ones_except_position_zero():
    nb = noise_batch(tokens(), MaskingSettings(), IDS, gen(2))
    masked = nb.input_ids.eq(IDS.mask)
    assert torch.equal(nb.loss_mask[:, 1:], masked[:, 1:])
    assert not nb.loss_mask[:, 0].any()
    assert torch.equal(nb.targets, tokens())  # no row rewrites in the plain objective


def test_prefix_rows_never_mask_their_prefix():
    x = tokens(B=128)
    nb = noise_batch(x, MaskingSettings(prefix_probability=1.0), IDS, gen(3))
    for b in range(x.shape[0]):
        ell = int((~nb.maskable[b]).nonzero().max()) + 1  # unmaskable span is a prefix [0, ell)
        assert not nb.maskable[b, :ell].any() and nb.maskable[b, ell:].all()
        assert not nb.input_ids[b, :ell].eq(IDS.mask).any()
        assert 1 <= ell <= x.shape[1] - 1


def test_truncated_suffix_is_pad_and_never_masked_and_never_with_prefix():
    x = tokens(B=256)
    s = MaskingSettings(prefix_probability=0.5, truncate_probability=1.0)
    nb = noise_batch(x, s, IDS, gen(4))
    pads = nb.targets.eq(IDS.pad)
    has_prefix = ~nb.maskable[:, 0] & ~pads[:, 0]
    truncated = pads.any(1)
    assert truncated.any() and has_prefix.any()
    assert not (truncated & has_prefix).any()  # S1 and S2 are exclusive per row
    assert not nb.input_ids[pads].eq(IDS.mask).any()
    assert not nb.loss_mask[pads].any()
    for b in torch.nonzero(truncated).flatten().tolist():  # pads form a suffix
        first = int(pads[b].nonzero().min())
        assert pads[b, first:].all()


@pytest.mark.parametrize("k", [2, 4, 8])
def test_block_masking_gives_contiguous_spans_of_at_least_k_at_rate_sigma(k):
    B, L = 256, 256
    maskable = torch.ones(B, L, dtype=torch.bool)
    sigma = torch.full((B,), 0.3)
    masked = corrupt(maskable, sigma, torch.full((B,), k), gen(5))
    # every run of masked tokens has length >= k
    padded = torch.nn.functional.pad(masked.int(), (1, 1))
    starts = (padded[:, 1:] - padded[:, :-1]) == 1
    ends = (padded[:, 1:] - padded[:, :-1]) == -1
    lengths = ends.nonzero()[:, 1] - starts.nonzero()[:, 1]
    assert lengths.min() >= k
    interior = masked[:, k:L - k].float().mean().item()  # interior tokens are masked with prob sigma
    assert abs(interior - 0.3) < 0.02


def test_block_windows_never_cover_unmaskable_tokens():
    B, L = 64, 64
    maskable = torch.ones(B, L, dtype=torch.bool)
    maskable[:, ::7] = False
    masked = corrupt(maskable, torch.full((B,), 0.9), torch.full((B,), 4), gen(6))
    assert not (masked & ~maskable).any()
    assert masked.any()


def test_block_mode_switch_uses_one_k_per_batch_and_row_mode_mixes():
    s = MaskingSettings(block_masking_probability=0.01, mask_block_sizes=[2, 4, 8], block_mode="switch")
    ks = block_sizes(32, s, gen(7), "cpu")
    assert ks.unique().numel() == 1 and int(ks[0]) in (2, 4, 8)
    s.block_mode, s.block_masking_probability = "row", 0.5
    ks = block_sizes(400, s, gen(8), "cpu")
    assert set(ks.unique().tolist()) == {1, 2, 4, 8}
    s.block_mode, s.block_masking_probability = "batch", 0.0
    assert block_sizes(8, s, gen(9), "cpu").eq(1).all()


def test_sft_prompt_is_never_masked_and_trailing_pads_are_trained():
    x = tokens(B=128, L=64)
    x[:, 48:] = IDS.pad  # right padding after the answer
    src = torch.zeros_like(x, dtype=torch.bool)
    src[:, :20] = True
    s = MaskingSettings(prefix_probability=1.0, truncate_probability=1.0, sampling_eps=0.9)
    nb = noise_batch(x, s, IDS, gen(10), src_mask=src)
    assert torch.equal(nb.input_ids[:, :20], x[:, :20])  # prompt untouched (S1/S2 forced off in SFT)
    assert torch.equal(nb.targets, x)
    assert nb.loss_mask[:, 48:].any()  # pads are targets


def test_progressive_src_mask_grows_with_steps():
    src = torch.zeros(2, 10, dtype=torch.bool)
    src[:, :8] = True
    assert not progressive_src_mask(src, 0, 100, 0.1).any()
    assert progressive_src_mask(src, 5, 100, 0.1).sum(1).tolist() == [4, 4]
    assert torch.equal(progressive_src_mask(src, 50, 100, 0.1), src)


def test_infill_pad_rows_only_mask_the_hole_which_ends_with_pads():
    x = tokens(B=64, L=64)
    s = MaskingSettings(infill_pad_probability=1.0, max_infill_len=16, sampling_eps=0.999)
    nb = noise_batch(x, s, IDS, gen(11))
    for b in range(64):
        hole = nb.maskable[b].nonzero().flatten()
        a, h = int(hole.min()), hole.numel()
        assert torch.equal(hole, torch.arange(a, a + h))  # one contiguous hole
        assert 1 <= h <= 16
        content = nb.targets[b, a:a + h]
        pads = content.eq(IDS.pad)
        if pads.any():  # the pads are the hole's tail
            assert pads[int(pads.nonzero().min()):].all()
        c = int((~pads).sum())
        assert torch.equal(nb.targets[b, :a + c], x[b, :a + c])  # prefix and real hole text unchanged
        assert torch.equal(nb.targets[b, a + h:], x[b, a + c:a + c + 64 - a - h])  # suffix follows the hole
        assert not nb.input_ids[b, :a].eq(IDS.mask).any()


def test_fim_rows_have_psm_layout_and_keep_all_text():
    x = torch.arange(40).repeat(3, 1)
    out = fim_rows(x, torch.tensor([True, False, True]), IDS, gen(12))
    assert torch.equal(out[1], x[1])
    for b in (0, 2):
        row = out[b].tolist()
        assert row[0] == IDS.fim_prefix
        i_s, i_m = row.index(IDS.fim_suffix), row.index(IDS.fim_middle)
        p, s, m = row[1:i_s], row[i_s + 1:i_m], row[i_m + 1:-1]
        assert row[-1] == IDS.eos  # the middle ends, so an AR+FIM model learns to stop
        assert p + m + s == list(range(36))  # the original text minus the 4 tokens cut to fit


def test_noise_is_a_function_of_the_generator_state():
    x = tokens()
    s = MaskingSettings(prefix_probability=0.3, truncate_probability=0.3, block_masking_probability=0.5)
    a, b = noise_batch(x, s, IDS, gen(13)), noise_batch(x, s, IDS, gen(13))
    assert torch.equal(a.input_ids, b.input_ids) and torch.equal(a.sigma, b.sigma)
