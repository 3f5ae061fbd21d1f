"""coda_model.batching: holes of rows with different prefix/suffix lengths denoised in one batch."""

from __future__ import annotations

import pytest
import torch

from coda_model.batching import HoleRequest, infill_batch, pack_rows
from coda_model.testing import load_sharp
from coda_model.engine import DecodeConfig, Engine

TEXTS = [("def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"),
         ("x = 1\n", ""),
         ("import os\nimport sys\n\n\ndef main(argv):\n    for arg in argv:\n        ", "\n    return 0\n")]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sharp(tiny_model_dir):
    """The tiny model with a peaked head: no near-ties for float noise from padding to flip."""
    return Engine(load_sharp(tiny_model_dir))


def requests(engine: Engine) -> list[HoleRequest]:
    tok = engine.tokenizer
    return [HoleRequest(tok.encode(p), tok.encode(s)) for p, s in TEXTS]


@pytest.mark.parametrize("config", [
    DecodeConfig(steps=6, alg="entropy"),
    DecodeConfig(steps=16, alg="entropy", threshold=0.9, cache="dual", block_length=4),
    DecodeConfig(steps=8, alg="maskgit_plus", cache="prefix", block_length=4),
], ids=["exact", "editor-like-dual", "prefix"])
def test_greedy_batch_equals_one_by_one_for_rows_of_different_lengths(sharp, config) -> None:
    reqs = requests(sharp)
    *_, last = infill_batch(sharp, reqs, length=8, config=config)
    for row, req in enumerate(reqs):
        *_, alone = sharp.infill(req.prefix_ids, req.suffix_ids, length=8, config=config)
        assert torch.equal(last.tokens[row], alone.tokens[0]), f"row {row} differs from its one-by-one decode"
        assert sharp.hole_text(last, row) == sharp.hole_text(alone)


def test_rows_finish_on_their_own_and_stay_unchanged_after(sharp) -> None:
    config = DecodeConfig(steps=8, alg="entropy", threshold=0.5, cache="dual", block_length=8)
    states = list(infill_batch(sharp, requests(sharp), length=8, config=config))
    finished_at = {}
    for state in states:
        for row in range(state.tokens.shape[0]):
            if row in finished_at:
                assert torch.equal(state.tokens[row], finished_at[row][1])
            elif not state.masked[row].any():
                finished_at[row] = (state.step, state.tokens[row].clone())
    assert len(finished_at) == len(TEXTS) and states[-1].done


def test_packing_left_pads_prefixes_right_pads_suffixes_and_masks_pads(sharp) -> None:
    reqs = [HoleRequest([5, 6, 7], [8]), HoleRequest([9], [10, 11, 12])]
    packed = pack_rows(sharp, reqs, 2)
    m = sharp.mask_id
    pad = int(sharp.config.pad_token_id)
    assert packed.ids.tolist() == [[5, 6, 7, m, m, 8, pad, pad], [pad, pad, 9, m, m, 10, 11, 12]]
    assert packed.key_mask.tolist() == [[True] * 6 + [False] * 2, [False] * 2 + [True] * 6]
    assert packed.hole_start == 3 and packed.truncated == [False, False]


def test_rows_without_a_prefix_batch_together_but_not_with_rows_that_have_one(sharp) -> None:
    tok = sharp.tokenizer
    reqs = [HoleRequest([], tok.encode("    return total\n")), HoleRequest([], tok.encode("x"))]
    config = DecodeConfig(steps=4, alg="entropy")
    *_, last = infill_batch(sharp, reqs, length=4, config=config)
    for row, req in enumerate(reqs):
        *_, alone = sharp.infill(req.prefix_ids, req.suffix_ids, length=4, config=config)
        assert torch.equal(last.tokens[row], alone.tokens[0])
    with pytest.raises(ValueError, match="empty prefix"):
        infill_batch(sharp, reqs + requests(sharp), length=4, config=config)


def test_empty_hole_and_bad_input(sharp) -> None:
    (state,) = list(infill_batch(sharp, requests(sharp), length=0))
    assert state.done and state.tokens.shape == (len(TEXTS), 0)
    with pytest.raises(ValueError, match="at least one request"):
        infill_batch(sharp, [], length=4)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        infill_batch(sharp, [HoleRequest([10**9], [])], length=4)
