"""Next-edit proposals (`coda_model.next_edit`) on the tiny random-weight CoDA directory: real tokenizer,
real network, real caches. Properties of the method, not of a trained model's judgement."""

from __future__ import annotations

import pytest
import torch

from coda_model.checkpoint import load_model
from coda_model.edit_config import EditConfig
from coda_model.engine import Engine
from coda_model.next_edit import (assign_passes, denoise_spans, pick_spans, plan_edits, propose_edits,
                                  score_window)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TEXT = "def area(width, height):\n    size = width * height\n    return size + width\n"


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return Engine(load_model(tiny_model_dir, device="cpu", dtype="float32"))


def _ids(engine):
    return engine.tokenizer.encode(TEXT)


def test_every_window_token_is_in_exactly_one_pass_and_a_word_keeps_one_pass():
    words = ["size", None, "width", "size", None, "width", "x", None]
    passes = assign_passes(words, 3, group_words=True)
    assert len(passes) == len(words) and all(0 <= p < 3 for p in passes)
    assert passes[0] == passes[3] and passes[2] == passes[5]
    assert assign_passes(words, 3, group_words=False) == [i % 3 for i in range(len(words))]


def test_each_token_is_scored_while_masked(engine):
    """One pass per position (no grouping, exact): p(token) equals a forward with that token alone masked."""
    ids = _ids(engine)
    window = (2, 9)
    cfg = EditConfig(cache="none", group_words=False, num_passes=window[1] - window[0])
    probs, best, forwards = score_window(engine, ids, window, list(range(window[1] - window[0])), cfg)
    assert forwards == window[1] - window[0]
    for k, j in enumerate(range(*window)):
        x = torch.tensor([ids])
        x[0, j] = engine.mask_id
        with torch.no_grad():
            logits = engine.model(x, logits_index=torch.tensor([j - 1])).logits[0, 0]
        p = torch.softmax(logits.float(), -1)
        assert probs[k] == pytest.approx(float(p[ids[j]]), rel=1e-4, abs=1e-7)
        assert best[k] == pytest.approx(float(p.max()), rel=1e-4)
        assert best[k] >= probs[k]


def test_dual_cache_scoring_equals_exact_when_the_window_is_the_whole_sequence(engine):
    ids = _ids(engine)
    passes = assign_passes([None] * len(ids), 4, group_words=False)
    exact = score_window(engine, ids, (0, len(ids)), passes, EditConfig(cache="none"))
    dual = score_window(engine, ids, (0, len(ids)), passes, EditConfig(cache="dual"))
    assert dual[0] == pytest.approx(exact[0], rel=1e-3, abs=1e-6)
    assert (exact[2], dual[2]) == (4, 2)   # dual: the clean forward that fills the cache, then every pass batched


def test_spans_skip_the_protected_edit_merge_neighbours_and_keep_the_least_likely():
    cfg = EditConfig(max_token_prob=0.5, max_ratio=1.0, merge_gap=0, max_spans=2, max_span_tokens=3)
    probs = [0.9, 0.1, 0.2, 0.9, 0.01, 0.9, 0.3, 0.9, 0.05, 0.05, 0.05, 0.05]
    best = [1.0] * len(probs)
    spans = pick_spans(probs, best, (10, 22), None, cfg)
    assert [(a, b) for a, b, _ in spans] == [(11, 13), (14, 15)]   # (16, 17) is likelier; 18..21 is too long
    protected = pick_spans(probs, best, (10, 22), (14, 15), cfg)
    assert all(not (a < 15 and b > 14) for a, b, _ in protected)
    # a token the model finds as likely as anything else is no suspect, however rare
    assert pick_spans([0.01], [0.011], (0, 1), None, EditConfig(max_token_prob=0.5, max_ratio=0.5)) == []


def test_cost_is_bounded_by_passes_and_steps(engine):
    ids = _ids(engine)
    cfg = EditConfig(max_token_prob=1.0, max_ratio=1.0, min_confidence=0.0, num_passes=3, steps=4, max_spans=3)
    found = propose_edits(engine, ids, (0, len(ids)), config=cfg)
    assert found.suspects, "a random model finds every token unlikely"
    assert found.num_forwards <= 1 + cfg.num_passes + cfg.steps
    assert len(found.suspects) <= cfg.max_spans


def test_proposals_change_text_pass_the_bar_and_never_touch_the_protected_span(engine):
    ids = _ids(engine)
    protect = (3, 6)
    loose = EditConfig(max_token_prob=1.0, max_ratio=1.0, min_confidence=0.0, max_spans=4)
    found = propose_edits(engine, ids, (0, len(ids)), protect=protect, config=loose)
    assert found.decoded
    for e in found.proposals:
        assert e.new_ids != ids[e.start:e.end]
        assert not (e.start < protect[1] and e.end > protect[0])
        assert len(e.new_ids) <= e.end - e.start + loose.slack
    changed = [e for e in found.decoded if e.new_ids != ids[e.start:e.end]]
    assert len(found.proposals) == len(changed)
    strict = propose_edits(engine, ids, (0, len(ids)), protect=protect,
                           config=EditConfig(max_token_prob=1.0, max_ratio=1.0, min_confidence=1.0, max_spans=4))
    assert all(e.confidence >= 1.0 for e in strict.proposals)


def test_span_decode_is_deterministic_and_fills_every_mask(engine):
    ids = _ids(engine)
    cfg = EditConfig(steps=3)
    a, n = denoise_spans(engine, ids, [(2, 4), (10, 11)], cfg)
    b, _ = denoise_spans(engine, ids, [(2, 4), (10, 11)], cfg)
    assert a == b and len(a) == 2 and n <= 3
    assert all(engine.mask_id not in new for new, _ in a)


def test_empty_or_out_of_range_window_gives_nothing(engine):
    ids = _ids(engine)
    assert propose_edits(engine, ids, (len(ids), len(ids) + 5)).proposals == []
    assert propose_edits(engine, ids, (5, 5)).num_forwards == 0
    assert propose_edits(engine, [], (0, 0)).proposals == []


def test_long_input_is_trimmed_and_indices_stay_the_callers(tiny_model_dir):
    eng = Engine(load_model(tiny_model_dir, device="cpu", dtype="float32"), max_context=64)
    ids = eng.tokenizer.encode(TEXT * 12)
    window = (len(ids) // 2, len(ids) // 2 + 20)
    cfg = EditConfig(max_token_prob=1.0, max_ratio=1.0, min_confidence=0.0, max_spans=2, slack=1)
    found = propose_edits(eng, ids, window, config=cfg)
    assert found.window == window
    assert all(window[0] <= a and b <= window[1] for a, b, _ in found.suspects)
    plan = plan_edits(eng, ids, window, config=cfg)
    assert len(plan.ids) + cfg.slack * cfg.max_spans <= 64
    assert plan.ids == ids[plan.base:plan.base + len(plan.ids)]


def test_window_wider_than_the_bound_is_cut_around_the_edit(engine):
    ids = engine.tokenizer.encode(TEXT * 4)
    found = propose_edits(engine, ids, (0, len(ids)), protect=(40, 42), config=EditConfig(max_window_tokens=16))
    w0, w1 = found.window
    assert w1 - w0 == 16 and w0 <= 41 < w1


def test_bad_token_ids_and_settings_fail_with_a_clear_message(engine):
    with pytest.raises(ValueError, match="outside the vocabulary"):
        propose_edits(engine, [10 ** 9], (0, 1))
    with pytest.raises(ValueError, match="num_passes"):
        EditConfig(num_passes=0)
    with pytest.raises(ValueError, match="cache"):
        EditConfig(cache="prefix")
