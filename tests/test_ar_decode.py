"""The AR baseline's cached greedy decode equals plain argmax decoding without a cache."""

from __future__ import annotations

import pytest
import torch

from coda_model.ar_decode import ARCache, greedy_decode
from coda_model.config import CodaConfig
from coda_model.network import CodaLM, init_weights

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model() -> CodaLM:
    """Tiny preset, random weights, 1,024-token vocabulary; the head scaled so argmaxes are not near-ties."""
    cfg = CodaConfig.tiny(vocab_size=1024, mask_token_id=1000, pad_token_id=1001, eos_token_id=1002)
    lm = CodaLM(cfg)
    init_weights(lm, seed=0)
    with torch.no_grad():
        lm.lm_head.weight.mul_(40.0)
    return lm.eval()


@torch.no_grad()
def uncached_greedy(model: CodaLM, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    for _ in range(n):
        ids.append(int(model(torch.tensor([ids]), causal=True).logits[0, -1].argmax()))
    return ids[len(prompt):]


@pytest.mark.parametrize("prompt", [[5], [17, 300, 42, 9, 9, 611, 2]])
def test_cached_greedy_equals_uncached_argmax(model: CodaLM, prompt: list[int]):
    ref = uncached_greedy(model, prompt, 12)
    assert len(set(ref)) > 1  # a decode that repeats one token would not show a misplaced cache entry
    assert list(greedy_decode(model, prompt, 12)) == ref


def test_decode_is_lazy_and_a_prefix_of_the_longer_one(model: CodaLM):
    tokens = greedy_decode(model, [17, 300, 42], 50)
    first = [next(tokens) for _ in range(4)]
    assert first == list(greedy_decode(model, [17, 300, 42], 4))
    assert list(greedy_decode(model, [], 5)) == [] and list(greedy_decode(model, [3], 0)) == []


def test_cache_refuses_to_overflow():
    kv = [(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4))]
    cache = ARCache(kv, max_len=4)
    cache.append([(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))])
    assert cache.length == 4 and cache.past()[0][0][0, 0, :, 0].tolist() == [0, 0, 0, 1]
    with pytest.raises(ValueError, match="cache holds 4 positions, asked to store 5"):
        cache.append([(torch.ones(1, 2, 1, 4), torch.ones(1, 2, 1, 4))])
