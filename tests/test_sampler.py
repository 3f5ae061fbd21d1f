"""Sampler properties, and every algorithm against a slow, obviously-correct reference (spec §5.2).

The reference below is CoDA's Dream-derived `diffusion_generate` loop written out plainly: a full
forward over the whole sequence every step, logits shifted, proposals for every masked position,
`int(m * (1 - s/t))` reveals (all at the last step), `torch.topk` / `torch.multinomial` over a [B, N]
confidence map that is -inf outside the masks. Randomness is drawn from one generator in the same
order the engine documents (token draws over masked positions in row-major order, then per-row
position draws), so even sampled runs must agree token for token.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from coda_model.checkpoint import LoadedModel
from coda_model.config import CodaConfig
from coda_model.engine import DecodeConfig, Engine
from coda_model.network import CodaLM, init_weights, shift_logits
from coda_model.sampler import denoise_step, num_to_reveal, timesteps, top_k_logits, top_p_logits

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOGIT_SCALE = 40.0  # sharpen the random head so confidences are spread out (no near-ties between positions)


@pytest.fixture(scope="module")
def sharp():
    """A real CodaLM (tiny preset, random weights) with a 1,024-token vocabulary: the reference runs
    full-vocabulary sorts every step, which the 151,936-row head would make slow. No tokenizer needed."""
    cfg = CodaConfig.tiny(vocab_size=1024, mask_token_id=1000, pad_token_id=1001, eos_token_id=1002)
    model = CodaLM(cfg)
    init_weights(model, seed=0)
    with torch.no_grad():
        model.lm_head.weight.mul_(LOGIT_SCALE)
    return LoadedModel(model=model.eval(), config=cfg, tokenizer=None, path=Path("."), device=torch.device("cpu"),
                       dtype=torch.float32)


# --------------------------------------------------------------------------------------- reference
def ref_sample_tokens(logits, temperature, top_p, top_k, alg, gen):
    if temperature > 0:
        logits = logits / temperature
    if top_p is not None and top_p < 1:
        sorted_logits, sorted_idx = torch.sort(logits, descending=True)
        cum = torch.cumsum(F.softmax(sorted_logits, dim=-1), dim=-1)
        remove = cum > top_p
        remove[..., 1:] = remove[..., :-1].clone()
        remove[..., 0] = False
        logits = logits.masked_fill(torch.zeros_like(logits, dtype=torch.bool).scatter_(-1, sorted_idx, remove),
                                    torch.finfo(logits.dtype).min)
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]))[0][..., -1, None]
        logits = logits.masked_fill(logits < kth, torch.finfo(logits.dtype).min)
    probs = torch.softmax(logits, dim=-1)
    if temperature > 0:
        x0 = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
        confidence = probs.gather(-1, x0[:, None]).squeeze(-1)
    else:
        confidence, x0 = probs.max(dim=-1)
    if alg == "topk_margin":
        s = torch.sort(probs, dim=-1, descending=True).values
        confidence = s[:, 0] - s[:, 1]
    if alg == "entropy":
        confidence = torch.sum(probs * torch.log(probs + 1e-10), dim=-1)
    return confidence, x0


def reference_generate(model, x, mask_id, steps, alg, temperature=0.0, top_p=None, top_k=None, alg_temp=None,
                       eps=1e-3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = x.clone()
    hole = (x == mask_id).any(0).nonzero().squeeze(-1)  # the columns that start masked
    ts = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    for i in range(steps):
        mask_index = x == mask_id
        with torch.no_grad():
            logits = shift_logits(model(x).logits.float())
        mask_logits = logits[mask_index]
        t, s = ts[i].item(), ts[i + 1].item()
        if alg == "origin":
            p_transfer = 1 - s / t if i < steps - 1 else 1
            x0 = torch.full((mask_logits.shape[0],), mask_id, dtype=torch.long)
            transfer = torch.rand(x0.shape, generator=gen) < p_transfer
            if transfer.any():
                x0[transfer] = ref_sample_tokens(mask_logits[transfer], temperature, top_p, top_k, alg, gen)[1]
            x[mask_index] = x0
            continue
        confidence, x0 = ref_sample_tokens(mask_logits, temperature, top_p, top_k, alg, gen)
        n_mask = mask_index.sum().item() / x.shape[0]
        k = int(n_mask * (1 - s / t)) if i < steps - 1 else int(n_mask)
        full = torch.full(x.shape, -torch.inf)
        full[mask_index] = confidence
        proposal = torch.full_like(x, mask_id)
        proposal[mask_index] = x0
        for r in range(x.shape[0]):
            if k == 0:
                continue
            if not alg_temp:
                idx = torch.topk(full[r], k).indices
            else:  # positions outside the hole have probability 0; drawing over the hole's columns only
                # is the same distribution and lines the generator stream up with the engine's
                idx = hole[torch.multinomial(F.softmax(full[r, hole] / alg_temp, dim=-1), k, generator=gen)]
            x[r, idx] = proposal[r, idx]
    return x


CASES = [
    ("origin", dict()),
    ("origin", dict(temperature=0.7, top_p=0.9)),
    ("maskgit_plus", dict()),
    ("maskgit_plus", dict(temperature=0.8, top_k=50)),
    ("topk_margin", dict()),
    ("topk_margin", dict(temperature=0.5, top_p=0.8, alg_temp=0.5)),
    ("entropy", dict()),
    ("entropy", dict(temperature=1.0, top_p=0.95, top_k=100, alg_temp=0.1)),
]


@pytest.mark.parametrize("alg,kw", CASES, ids=[f"{a}-{i}" for i, (a, _) in enumerate(CASES)])
def test_each_algorithm_matches_the_reference_sampler(sharp, alg, kw) -> None:
    engine = Engine(sharp)
    prefix, suffix, length, steps = [100, 200, 300, 400, 500], [600, 700, 800], 8, 5
    state = None
    for state in engine.infill(prefix, suffix, length=length, num_candidates=2,
                               config=DecodeConfig(steps=steps, alg=alg, seed=3, **kw)):
        pass
    x = torch.tensor([prefix + [engine.mask_id] * length + suffix] * 2)
    ref = reference_generate(sharp.model, x, engine.mask_id, steps, alg, seed=3, **kw)
    assert torch.equal(state.tokens, ref[:, len(prefix):len(prefix) + length])
    assert not state.masked.any() and state.done


def test_generate_matches_the_reference_without_suffix(sharp) -> None:
    engine = Engine(sharp)
    prompt, new = [11, 22, 33, 44], 6
    out = engine.generate([prompt], max_new_tokens=new, config=DecodeConfig(steps=new, alg="maskgit_plus"))
    ref = reference_generate(sharp.model, torch.tensor([prompt + [engine.mask_id] * new]), engine.mask_id, new,
                             "maskgit_plus")
    assert out == [ref[0, len(prompt):].tolist()]


# --------------------------------------------------------------------------------------- pure functions
def _reveal_counts(masked: int, steps: int) -> tuple[list[int], int]:
    """Tokens revealed at each step of the schedule, and how many stay masked at the end."""
    ts, counts = timesteps(steps, 1e-3), []
    for i in range(steps):
        counts.append(num_to_reveal(masked, i, steps, ts))
        masked -= counts[-1]
    return counts, masked


def test_schedule_reveals_one_per_step_when_steps_equal_length() -> None:
    """Spec §5.2.6: 768 tokens / 768 steps -> 0 at step 0, then 1 per step, 2 at the last."""
    counts, left = _reveal_counts(768, 768)
    assert left == 0 and counts[0] == 0 and counts[-1] == 2 and set(counts[1:-1]) == {1}


def test_schedule_reveals_three_per_step_at_768_over_256() -> None:
    counts, left = _reveal_counts(768, 256)
    assert left == 0 and sum(counts) == 768 and 3 in counts and max(counts[:-1]) <= 3


def test_top_p_keeps_the_smallest_prefix_past_p_and_always_the_top_token() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    kept = top_p_logits(logits, 0.7) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[True, True, False, False]]
    kept = top_p_logits(logits, 0.01) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[True, False, False, False]]
    kept = top_k_logits(logits, 3) > torch.finfo(torch.float32).min
    assert kept.tolist() == [[True, True, True, False]]


def _window(probs_rows: list[list[float]]):
    logits = torch.log(torch.tensor(probs_rows))[None]  # [1, W, V]
    w = logits.shape[1]
    return logits, torch.zeros(1, w, dtype=torch.long), torch.ones(1, w, dtype=torch.bool), torch.zeros(1, w)


def test_threshold_reveals_every_confident_position_and_at_least_one() -> None:
    logits, tokens, masked, conf = _window([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.55, 0.45]])
    n = denoise_step(logits, tokens, masked, conf, step=0, steps=4, alg="maskgit_plus", threshold=0.9)
    assert n == 2 and masked.tolist() == [[False, True, False, True]] and tokens[0, 2] == 1
    assert conf[0, 0] == pytest.approx(0.95) and conf[0, 1] == 0
    n = denoise_step(logits, tokens, masked, conf, step=1, steps=4, alg="maskgit_plus", threshold=0.9)
    assert n == 1 and masked.tolist() == [[False, False, False, True]]  # none passes: the most confident


def test_threshold_reveals_everything_left_on_the_last_allowed_step() -> None:
    logits, tokens, masked, conf = _window([[0.5, 0.5], [0.6, 0.4], [0.3, 0.7]])
    n = denoise_step(logits, tokens, masked, conf, step=1, steps=2, alg="entropy", threshold=0.99)
    assert n == 3 and not masked.any()


def test_entropy_and_margin_rank_positions_by_their_own_confidence() -> None:
    # position 0: p1 high but a close second; position 1: lower p1, wide margin over a flat tail
    rows = [[0.50, 0.48, 0.01, 0.01], [0.45, 0.19, 0.18, 0.18]]
    for alg, expect in (("maskgit_plus", 0), ("topk_margin", 1)):
        logits, tokens, masked, conf = _window(rows)
        denoise_step(logits, tokens, masked, conf, step=0, steps=2, alg=alg, threshold=1.0)  # nothing passes: top-1
        assert masked[0].tolist().index(False) == expect, alg
    ent = [-sum(p * math.log(p + 1e-10) for p in r) for r in rows]
    logits, tokens, masked, conf = _window(rows)
    denoise_step(logits, tokens, masked, conf, step=0, steps=2, alg="entropy", threshold=1.0)
    assert masked[0].tolist().index(False) == min(range(2), key=lambda i: ent[i])
