"""Engine properties on the tiny random-weight CoDA directory (real tokenizer, real 151,936-row head).

Random weights give near-uniform distributions, so tests that need confident predictions (threshold
decoding) use the same checkpoint with its lm_head scaled up: still a real CodaLM, just peakier.
"""

from __future__ import annotations

import pytest
import torch

from coda_model.cache import DualCache, PrefixCache
from coda_model.checkpoint import load_model
from coda_model.testing import load_sharp
from coda_model.engine import DecodeConfig, DenoiseState, Engine, plan_blocks, token_agreement

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PREFIX = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))\n"


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    return load_model(tiny_model_dir, device="cpu", dtype="float32")


@pytest.fixture(scope="module")
def sharp(tiny_model_dir):
    return load_sharp(tiny_model_dir)


def run(engine: Engine, length: int = 8, num_candidates: int = 1, **kw) -> list[DenoiseState]:
    tok = engine.tokenizer
    return list(engine.infill(tok.encode(PREFIX), tok.encode(SUFFIX), length=length,
                              num_candidates=num_candidates, config=DecodeConfig(**kw)))


# --------------------------------------------------------------------------------------- basics
def test_infill_yields_every_step_and_ends_with_a_full_hole(loaded) -> None:
    engine = Engine(loaded)
    states = run(engine, length=6, steps=6)
    assert [s.step for s in states] == list(range(1, 7)) and all(s.steps == 6 for s in states)
    assert states[-1].done and not any(s.done for s in states[:-1])
    assert not states[-1].masked.any() and (states[-1].tokens != engine.mask_id).all()
    masked_counts = [int(s.masked.sum()) for s in states]
    assert masked_counts == sorted(masked_counts, reverse=True)  # revealed tokens are never re-masked
    assert (states[-1].confidence > 0).all()


def test_seed_reproducibility(loaded) -> None:
    engine = Engine(loaded)
    a = run(engine, steps=4, temperature=1.0, alg="maskgit_plus", seed=7)[-1].tokens
    b = run(engine, steps=4, temperature=1.0, alg="maskgit_plus", seed=7)[-1].tokens
    c = run(engine, steps=4, temperature=1.0, alg="maskgit_plus", seed=8)[-1].tokens
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_candidates_share_a_batch_and_differ_when_sampled(loaded) -> None:
    engine = Engine(loaded)
    sampled = run(engine, steps=4, num_candidates=3, temperature=1.0, seed=1)[-1]
    assert sampled.tokens.shape == (3, 8) and len({tuple(r) for r in sampled.tokens.tolist()}) == 3
    greedy = run(engine, steps=4, num_candidates=2)[-1]
    assert torch.equal(greedy.tokens[0], greedy.tokens[1])


@pytest.mark.parametrize("cache", ["none", "dual"])
def test_generate_batches_rows_of_different_lengths_like_single_calls(sharp, cache) -> None:
    engine = Engine(sharp)  # peaked head: no near-ties for float noise from padding to flip
    tok = sharp.tokenizer
    prompts = [tok.encode("def f(x):\n    return"), tok.encode("import os")]
    cfg = DecodeConfig(steps=5, alg="entropy", cache=cache, block_length=3)
    batched = engine.generate(prompts, max_new_tokens=5, config=cfg)
    single = [engine.generate([p], max_new_tokens=5, config=cfg)[0] for p in prompts]
    assert batched == single and all(len(r) == 5 for r in batched)


# --------------------------------------------------------------------------------------- threshold / blocks
def test_threshold_decoding_reveals_at_least_one_per_step_and_finishes_in_fewer_forwards(sharp) -> None:
    engine = Engine(sharp)
    fixed = run(engine, length=12, steps=12, alg="entropy")
    fast = run(engine, length=12, steps=12, alg="entropy", threshold=0.5)
    revealed = [12 - int(fast[0].masked.sum())] + [int(a.masked.sum() - b.masked.sum()) for a, b in zip(fast, fast[1:])]
    assert all(n >= 1 for n in revealed)
    assert fast[-1].done and len(fast) < len(fixed) == 12
    # every revealed token's probability passed the threshold, except one forced pick per step
    assert int((fast[-1].confidence < 0.5).sum()) <= len(fast)


def test_block_decoding_fills_blocks_left_to_right(loaded) -> None:
    engine = Engine(loaded)
    states = run(engine, length=8, steps=8, block_length=4)
    for s in states:
        if s.masked[0, :4].any():
            assert s.masked[0, 4:].all(), "the second block started before the first was full"
    assert states[-1].done and len(states) == 8
    assert plan_blocks(10, 5, 4) == [(0, 4, 2), (4, 8, 2), (8, 10, 1)]
    assert plan_blocks(8, 100, None) == [(0, 8, 8)]


# --------------------------------------------------------------------------------------- caches
@pytest.mark.parametrize("cache_cls", [PrefixCache, DualCache])
def test_cached_step_equals_a_full_forward_when_no_token_changed(loaded, cache_cls) -> None:
    """Fixed point: with the same tokens, a window forward against the cache reproduces the full logits."""
    model, cfg = loaded.model, loaded.config
    x = torch.randint(0, 1000, (2, 20))
    w0, w1 = 7, 12
    with torch.no_grad():
        full = model(x, use_cache=True)
        cache = cache_cls(cfg.num_hidden_layers, 2, cfg.num_key_value_heads, 20, cfg.head_dim, torch.float32,
                          torch.device("cpu"))
        cache.update(full.key_values, (w0, w1))
        i0, i1 = cache.input_span(20)
        pos = torch.arange(i0, i1).expand(2, -1)
        part = model(x[:, i0:i1], position_ids=pos, past_key_values=cache.past(),
                     logits_index=torch.arange(w0, w1) - i0)
    torch.testing.assert_close(part.logits, full.logits[:, w0:w1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cache_refreshed_every_step_equals_exact_mode(sharp, cache) -> None:
    engine = Engine(sharp)
    exact = run(engine, length=8, steps=8, block_length=4)[-1]
    cached = run(engine, length=8, steps=8, block_length=4, cache=cache, cache_refresh=1)[-1]
    assert torch.equal(exact.tokens, cached.tokens)


@pytest.mark.parametrize("cache", ["prefix", "dual"])
def test_cached_steps_feed_only_the_window_and_report_agreement(sharp, cache) -> None:
    engine = Engine(sharp)
    tok = sharp.tokenizer
    n_prefix, n_suffix = len(tok.encode(PREFIX)), len(tok.encode(SUFFIX))
    seq = n_prefix + 8 + n_suffix
    widths: list[int] = []
    hook = sharp.model.register_forward_pre_hook(lambda m, args: widths.append(args[0].shape[1]))
    try:
        cached = run(engine, length=8, steps=8, block_length=4, cache=cache)[-1]
    finally:
        hook.remove()
    exact = run(engine, length=8, steps=8, block_length=4)[-1]
    assert cached.done and not cached.masked.any()
    expect_tail = {"prefix": [seq - (n_prefix - 1), seq - (n_prefix + 3)], "dual": [5, 5]}[cache]
    assert widths == [seq] + [expect_tail[0]] * 3 + [seq] + [expect_tail[1]] * 3
    agreement = token_agreement(cached.tokens, exact.tokens)
    print(f"{cache} cache agreement with exact mode on the random tiny model: {agreement:.2f}")
    assert 0.0 <= agreement <= 1.0


# --------------------------------------------------------------------------------------- cancellation
def test_cancellation_mid_way_leaves_no_state_and_the_next_call_is_unaffected(loaded) -> None:
    engine = Engine(loaded)
    before = dict(vars(engine))
    grad_before = torch.is_grad_enabled()
    it = engine.infill(loaded.tokenizer.encode(PREFIX), [], length=8, config=DecodeConfig(steps=8, cache="dual",
                                                                                         block_length=4))
    first = next(it)
    assert torch.is_grad_enabled() == grad_before  # no no_grad/inference mode held across the yield
    next(it)
    it.close()  # what a caller dropping the iterator does
    assert first.masked.sum() >= 7  # yielded states are copies: later steps did not change them
    assert vars(engine) == before
    fresh = list(Engine(loaded).infill(loaded.tokenizer.encode(PREFIX), [], length=8,
                                       config=DecodeConfig(steps=8, cache="dual", block_length=4)))[-1]
    again = list(engine.infill(loaded.tokenizer.encode(PREFIX), [], length=8,
                               config=DecodeConfig(steps=8, cache="dual", block_length=4)))[-1]
    assert torch.equal(fresh.tokens, again.tokens)


# --------------------------------------------------------------------------------------- bad input
def test_empty_prefix_and_suffix_generate_an_unconditioned_hole(loaded) -> None:
    states = list(Engine(loaded).infill([], [], length=4, config=DecodeConfig(steps=4)))
    assert states[-1].done and not states[-1].masked.any()


def test_length_zero_gives_one_done_empty_state(loaded) -> None:
    engine = Engine(loaded)
    states = list(engine.infill([1, 2], [3], length=0))
    assert len(states) == 1 and states[0].done and states[0].tokens.shape == (1, 0)
    assert engine.hole_text(states[0]) == ""
    assert engine.generate([[1, 2]], max_new_tokens=0, config=DecodeConfig()) == [[]]


def test_context_beyond_the_model_is_truncated_at_the_far_ends(loaded) -> None:
    engine = Engine(loaded, max_context=32)
    prefix, suffix = list(range(100, 140)), list(range(200, 240))
    p, s = engine.fit_context(prefix, suffix, 8)
    assert p == prefix[-12:] and s == suffix[:12]
    p, s = engine.fit_context(prefix, suffix[:3], 8)
    assert p == prefix[-21:] and s == suffix[:3]  # the short side leaves its room to the other
    states = list(engine.infill(prefix, suffix, length=8, config=DecodeConfig(steps=2)))
    assert states[-1].done
    with pytest.raises(ValueError, match="exceeds the model's context"):
        engine.infill(prefix, suffix, length=40)


def test_steps_beyond_the_length_are_clamped(loaded) -> None:
    states = list(Engine(loaded).infill([1, 2, 3], [4], length=3, config=DecodeConfig(steps=50)))
    assert len(states) == 3 and states[-1].steps == 3 and states[-1].done


@pytest.mark.parametrize("kw,match", [
    (dict(alg="greedy"), "unknown alg 'greedy'"),
    (dict(cache="full"), "unknown cache 'full'"),
    (dict(steps=0), "steps must be >= 1"),
    (dict(threshold=1.5), "threshold must be in"),
    (dict(block_length=0), "block_length must be >= 1"),
    (dict(top_p=0.0), "top_p must be in"),
])
def test_bad_decode_config_is_a_clear_error(kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        DecodeConfig(**kw)


def test_bad_ids_and_lengths_are_clear_errors(loaded) -> None:
    engine = Engine(loaded)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.infill([1, 10**7], [], length=4)
    with pytest.raises(ValueError, match="length must be >= 0"):
        engine.infill([1], [], length=-1)
    with pytest.raises(ValueError, match="num_candidates must be >= 1"):
        engine.infill([1], [], length=2, num_candidates=0)


# --------------------------------------------------------------------------------------- hole text
def _state(ids: list[int], masked: list[bool] | None = None) -> DenoiseState:
    masked_t = torch.tensor([masked or [False] * len(ids)])
    return DenoiseState(tokens=torch.tensor([ids]), masked=masked_t, confidence=torch.zeros(1, len(ids)),
                        step=1, steps=1, done=not masked_t.any())


def test_hole_text_stops_at_eos_or_pad_and_drops_special_tokens(loaded) -> None:
    engine, tok = Engine(loaded), loaded.tokenizer
    ids = tok.encode("x = 1") + [tok.eos_id] + tok.encode("junk")
    assert engine.hole_text(_state(ids)) == "x = 1"
    ids = tok.encode("y") + [tok.mask_id] + tok.encode(" = 2") + [tok.pad_id, tok.pad_id]
    assert engine.hole_text(_state(ids)) == "y = 2"


def test_hole_text_never_returns_a_partial_utf8_character(loaded) -> None:
    engine, tok = Engine(loaded), loaded.tokenizer
    ids = tok.encode("ok 🦜")
    assert tok.decode(ids[:-1]).endswith("\ufffd"), "pick a character split across tokens"
    assert engine.hole_text(_state(ids[:-1])) == "ok "
    assert engine.hole_text(_state(ids)) == "ok 🦜"


def test_partial_hole_text_leaves_masked_spans_out(loaded) -> None:
    engine, tok = Engine(loaded), loaded.tokenizer
    a, b = tok.encode("return a"), tok.encode(" + b")
    ids = a + [tok.mask_id] * 2 + b
    state = _state(ids, [False] * len(a) + [True, True] + [False] * len(b))
    assert engine.hole_text(state, partial=True) == "return a + b"
    state = _state(ids, [True] * len(a) + [True, True] + [False] * len(b))
    assert engine.hole_text(state, partial=True) == " + b"


# --------------------------------------------------------------------------------------- coda-bench dispatcher
def test_coda_bench_lists_subcommands_and_rejects_unknown_ones(capsys) -> None:
    from coda_bench.cli import SUBCOMMANDS, main

    assert main(["--help"]) == 0 and "engine" in capsys.readouterr().out
    assert main(["no-such-bench"]) == 2 and "unknown subcommand 'no-such-bench'" in capsys.readouterr().err
    assert SUBCOMMANDS["engine"][0] == "coda_bench.engine"
