"""Loss functions: CoDA's formula exactly, head-only-at-masks equals full logits, AR baseline."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from coda_model.config import CodaConfig
from coda_model.network import CodaLM, init_weights
from coda_train.masking import MaskingSettings, SpecialIds, noise_batch
from coda_train.objective import ar_loss_sum, diffusion_loss_sum

IDS = SpecialIds(mask=127, pad=126, eos=125)


def tiny_model(seed=0):
    torch.manual_seed(seed)
    cfg = CodaConfig.tiny(vocab_size=128, mask_token_id=127, pad_token_id=126, eos_token_id=125, hidden_size=32,
                          intermediate_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=8)
    model = CodaLM(cfg)
    init_weights(model, seed=seed)
    return model


def batch(B=4, L=32, seed=0, **settings):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 120, (B, L), generator=g)
    return noise_batch(x, MaskingSettings(**settings), IDS, g)


def test_diffusion_loss_is_the_reference_formula():
    model = tiny_model()
    nb = batch()
    loss_sum, n = diffusion_loss_sum(model, nb, logits="full")
    logits = model(nb.input_ids).logits.float()
    B, L = nb.input_ids.shape
    ref = 0.0
    for b in range(B):
        for j in range(1, L):
            if nb.input_ids[b, j] == IDS.mask:
                ref += (1 / nb.sigma[b]) * F.cross_entropy(logits[b, j - 1][None], nb.targets[b, j][None])
    assert torch.allclose(loss_sum, ref, rtol=1e-5)
    assert n == int(nb.input_ids[:, 1:].eq(IDS.mask).sum())


def test_head_only_at_masked_positions_equals_full_logits_in_value_and_gradient():
    nb = batch(B=3, L=40, seed=1, block_masking_probability=1.0, mask_block_sizes=[4])
    grads = []
    values = []
    for mode in ("full", "masked"):
        model = tiny_model()
        loss, _ = diffusion_loss_sum(model, nb, logits=mode)
        loss.backward()
        values.append(loss.detach())
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters()]))
    assert torch.allclose(values[0], values[1], rtol=1e-5)
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_no_masked_token_still_gives_a_differentiable_zero():
    model = tiny_model()
    nb = batch(B=2, L=16)
    nb.loss_mask[:] = False
    loss, n = diffusion_loss_sum(model, nb)
    loss.backward()
    assert n == 0 and loss.item() == 0.0


def test_segment_ids_keep_attention_inside_documents():
    model = tiny_model()
    nb = batch(B=1, L=32, seed=2)
    seg = torch.zeros(1, 32, dtype=torch.long)
    seg[:, 16:] = 1
    base, _ = diffusion_loss_sum(model, nb, segment_ids=seg, logits="full")
    changed = nb.input_ids.clone()
    changed[:, 20:] = (changed[:, 20:] + 1) % 120  # edit only the second document
    nb2 = type(nb)(**{**nb.__dict__, "input_ids": changed, "loss_mask": nb.loss_mask.clone()})
    nb2.loss_mask[:, 16:] = False
    nb1 = type(nb)(**{**nb.__dict__, "loss_mask": nb.loss_mask.clone()})
    nb1.loss_mask[:, 16:] = False
    a, _ = diffusion_loss_sum(model, nb1, segment_ids=seg, logits="full")
    b, _ = diffusion_loss_sum(model, nb2, segment_ids=seg, logits="full")
    assert torch.allclose(a, b)  # the first document's loss ignores the second document
    c, _ = diffusion_loss_sum(model, nb2, segment_ids=None, logits="full")
    assert not torch.allclose(a, c)


def test_ar_loss_is_causal_next_token_cross_entropy():
    model = tiny_model()
    x = torch.randint(0, 120, (2, 24), generator=torch.Generator().manual_seed(3))
    loss_sum, n = ar_loss_sum(model, x)
    logits = model(x, causal=True).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 128), x[:, 1:].reshape(-1), reduction="sum")
    assert torch.allclose(loss_sum, ref, rtol=1e-5) and n == 2 * 23
    x2 = x.clone()
    x2[:, -1] = (x2[:, -1] + 1) % 120  # the future does not change earlier predictions
    logits2 = model(x2, causal=True).logits
    assert torch.allclose(logits[:, :-1], logits2[:, :-1], atol=1e-6)
